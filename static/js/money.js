// How routerweb writes money, on every page: the one JavaScript twin of billing/money.py `usd_text`
// (tests/test_money.py runs both on the same amounts). Loaded by templates/base.html.
"use strict";

// Dollars to read, by the rules of billing/money.py `usd_text` (keep the two alike): cents at least
// ("$12.50"), under a dollar down to the third significant digit ("$0.000348"), cut, never rounded
// up ("$4.99" for 4.999). `value` is an exact decimal string of the document, or a number (an axis
// tick), first written out in plain digits (15 significant: no binary noise such as 0.1 + 0.2).
function usdText(value) {
  let text = typeof value === "number"
    ? value.toLocaleString("en-US", { useGrouping: false, maximumSignificantDigits: 15 })
    : String(value).trim();
  const negative = text.startsWith("-");
  if (negative) text = text.slice(1);
  let [whole, fraction = ""] = text.split(".");
  whole = whole.replace(/^0+(?=\d)/, "") || "0";
  let places = 2;
  if (whole === "0") {
    const lead = fraction.search(/[1-9]/); // the leading digit's place after the point, from 0
    if (lead >= 0) places = Math.max(2, lead + 3);
  }
  fraction = fraction.slice(0, places).replace(/0+$/, "").padEnd(2, "0");
  const shown = "$" + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + fraction;
  return negative && /[1-9]/.test(whole + fraction) ? "-" + shown : shown;
}
