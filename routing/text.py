"""Text from clients and upstreams made fit for storage: what every text column can hold."""


def text_bounded(value: object, max_length: int) -> str:
    """`value` fit for a text column on any database: a string (anything else becomes ""), without NUL
    characters (PostgreSQL refuses them in text) and cut to `max_length` characters."""
    if not isinstance(value, str):
        return ""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value[:max_length]
