// Model output as Markdown, on the playground and a call's page: parsed by the vendored marked,
// sanitized by DOMPurify (the only HTML of model output that reaches a page), links opened apart,
// code highlighted by highlight.js. Loaded with the libraries by templates/_markdown_scripts.html.
"use strict";

const MARKDOWN_FORBIDDEN_TAGS = ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"];

// Whether the libraries are there; without them, pages keep the text as the server wrote it, escaped.
function markdownReady() {
  return Boolean(window.marked && window.DOMPurify && window.DOMPurify.isSupported);
}

// `text` rendered into `container` (parsed, sanitized, links opened in a new tab, without a referrer).
function markdownRender(container, text) {
  const html = window.marked.parse(text, { gfm: true, breaks: false, async: false });
  container.innerHTML = window.DOMPurify.sanitize(html, { FORBID_TAGS: MARKDOWN_FORBIDDEN_TAGS, FORBID_ATTR: ["style"] });
  container.classList.add("md");
  for (const link of container.querySelectorAll("a[href]")) {
    link.target = "_blank";
    link.rel = "noopener noreferrer nofollow";
  }
}

// Highlight a code block of rendered Markdown (its language when highlight.js knows it, else guessed).
function markdownHighlight(code) {
  if (!window.hljs) return;
  const language = [...code.classList].find((c) => c.startsWith("language-"));
  if (!language || window.hljs.getLanguage(language.slice(9))) window.hljs.highlightElement(code);
}
