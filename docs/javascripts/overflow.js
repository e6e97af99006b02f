// A block that scrolls sideways (a long line of code, a wide table, a long equation) says so:
// its host gets data-scrolls="more" (a fade and "scroll →" at its lower right, extra.css)
// until the reader has scrolled to its end ("end"). Blocks that fit get no mark.
(function () {
  "use strict";

  // [scroller selector, how to find the element that shows the hint]
  var KINDS = [
    [".md-typeset pre > code", function (el) { return el.parentElement; }],
    [".md-typeset pre:not(:has(> code))", function (el) { return wrap(el); }],
    [".md-typeset .table-scroll, .md-typeset .md-typeset__scrollwrap, .md-typeset .katex-display, .md-typeset table.bench-table",
      function (el) { return wrap(el); }],
  ];

  // Scrolled content would carry a hint placed inside it along, so the hint goes on a wrapper.
  function wrap(el) {
    if (el.parentElement && el.parentElement.classList.contains("scroll-host")) return el.parentElement;
    var host = document.createElement("div");
    host.className = "scroll-host";
    el.parentNode.insertBefore(host, el);
    host.appendChild(el);
    return host;
  }

  function mark(scroller, host) {
    var extra = scroller.scrollWidth - scroller.clientWidth;
    if (extra <= 1) { host.removeAttribute("data-scrolls"); return; }
    host.setAttribute("data-scrolls", scroller.scrollLeft >= extra - 2 ? "end" : "more");
  }

  var tracked = [];

  function scan() {
    KINDS.forEach(function (kind) {
      document.querySelectorAll(kind[0]).forEach(function (scroller) {
        if (scroller.hasAttribute("data-scroll-tracked")) return;
        if (scroller.scrollWidth - scroller.clientWidth <= 1) return; // fits: leave the DOM alone
        scroller.setAttribute("data-scroll-tracked", "");
        var host = kind[1](scroller);
        tracked.push([scroller, host]);
        scroller.addEventListener("scroll", function () { mark(scroller, host); }, { passive: true });
        mark(scroller, host);
      });
    });
    tracked.forEach(function (t) { mark(t[0], t[1]); });
  }

  var pending = null;
  function later() { clearTimeout(pending); pending = setTimeout(scan, 150); }

  // The first look waits for the browser to be idle: reading every block's width forces a
  // layout of the whole page, which must not delay a phone's first chart.
  function start() {
    (window.requestIdleCallback || function (fn) { return setTimeout(fn, 200); })(scan, { timeout: 3000 });
    // KaTeX renders after DOMContentLoaded and fonts change widths: look again once it is all in.
    window.addEventListener("load", later);
    window.addEventListener("resize", later);
    if (document.fonts && document.fonts.ready) document.fonts.ready.then(later);
    // Math is typeset late on a page with charts (site.js marks the page when it is done).
    new MutationObserver(later).observe(document.documentElement, { attributes: true, attributeFilter: ["data-math"] });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
