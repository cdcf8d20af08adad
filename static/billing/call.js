/* A call's page: each stored message ([data-md], its text in the page) rendered as Markdown the way the
   playground renders answers: parsed by the vendored marked, sanitized by DOMPurify (the only HTML
   that reaches the page), code highlighted by highlight.js. Without those libraries the text stays
   as the server wrote it, escaped. */
(function () {
  "use strict";

  const FORBIDDEN_TAGS = ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "video", "audio"];
  const ready = () => Boolean(window.marked && window.DOMPurify && window.DOMPurify.isSupported);

  function render(container) {
    const html = window.marked.parse(container.textContent, { gfm: true, breaks: false, async: false });
    container.innerHTML = window.DOMPurify.sanitize(html, { FORBID_TAGS: FORBIDDEN_TAGS, FORBID_ATTR: ["style"] });
    container.classList.add("md");
    for (const link of container.querySelectorAll("a[href]")) {
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
    }
    if (!window.hljs) return;
    for (const code of container.querySelectorAll("pre > code")) {
      const language = [...code.classList].find((c) => c.startsWith("language-"));
      if (!language || window.hljs.getLanguage(language.slice(9))) window.hljs.highlightElement(code);
    }
  }

  if (!ready()) return;
  for (const node of document.querySelectorAll("[data-md]")) render(node);
  document.documentElement.dataset.rendered = "markdown";
})();
