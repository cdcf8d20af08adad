/* A call's page: each stored message ([data-md], its text in the page) rendered as Markdown the way the
   playground renders answers (static/js/markdown.js). Without the libraries the text stays as the
   server wrote it, escaped. */
(function () {
  "use strict";

  if (!markdownReady()) return;
  for (const node of document.querySelectorAll("[data-md]")) {
    markdownRender(node, node.textContent);
    for (const code of node.querySelectorAll("pre > code")) markdownHighlight(code);
  }
  document.documentElement.dataset.rendered = "markdown";
})();
