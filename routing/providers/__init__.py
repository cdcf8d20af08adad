"""Provider adapters: one module per upstream API format (see base.py for the contract)."""
