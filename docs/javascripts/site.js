// Math with the local KaTeX, and Plotly charts that follow the light/dark palette.
(function () {
  // Marks the page once its math is typeset ("none": the page has no math), for the tests.
  function renderMath() {
    var root = document.documentElement;
    if (!window.renderMathInElement) return root.setAttribute("data-math", "none");
    renderMathInElement(document.querySelector(".md-content") || document.body, {
      delimiters: [
        { left: "$$", right: "$$", display: true },
        { left: "\\[", right: "\\]", display: true },
        { left: "\\(", right: "\\)", display: false },
        { left: "$", right: "$", display: false },
      ],
      ignoredClasses: ["highlight"],  // code blocks; <pre> and <code> are skipped by default
      throwOnError: false,
    });
    root.setAttribute("data-math", "typeset");
  }

  function isDark() {
    return document.body.getAttribute("data-md-color-scheme") === "slate";
  }

  function themeCharts() {
    if (!window.Plotly) return;
    var dark = isDark();
    var fg = dark ? "#e3e5ea" : "#2b2b2b";
    var grid = dark ? "rgba(255,255,255,0.12)" : "rgba(0,0,0,0.10)";
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      // charts.js draws the site's own charts in each scheme's colours (and redraws them on a
      // switch): relaying them out here too would draw every chart twice.
      if (!el.layout || el.closest(".plotly-chart")) return;
      var update = { "font.color": fg, "title.font.color": fg, "legend.font.color": fg };
      Object.keys(el.layout).forEach(function (key) {
        if (/^[xy]axis\d*$/.test(key)) {
          update[key + ".gridcolor"] = grid;
          update[key + ".zerolinecolor"] = grid;
          update[key + ".linecolor"] = grid;
          update[key + ".color"] = fg;
        }
      });
      Plotly.relayout(el, update);
      el.setAttribute("data-theme", dark ? "dark" : "light");
    });
  }

  // KaTeX's scripts, where the page names them instead of loading them (a page with charts):
  // fetched once the first chart is drawn, or once the page has loaded, whichever comes first.
  function loadMathLater() {
    var meta = document.querySelector('meta[name="katex-scripts"]');
    if (!meta) return renderMath();
    var root = document.documentElement, done = false;
    function fetchAll() {
      if (done) return;
      done = true;
      var urls = meta.content.split(" ");
      (function next(i) {
        if (i === urls.length) return renderMath();
        var css = /\.css$/.test(urls[i]);
        var el = document.createElement(css ? "link" : "script");
        if (css) { el.rel = "stylesheet"; el.href = urls[i]; } else { el.src = urls[i]; }
        el.onload = function () { next(i + 1); };
        document.head.appendChild(el);
      })(0);
    }
    if (root.hasAttribute("data-first-chart-ms")) return fetchAll();
    new MutationObserver(function (_, observer) {
      if (root.hasAttribute("data-first-chart-ms")) { observer.disconnect(); fetchAll(); }
    }).observe(root, { attributes: true, attributeFilter: ["data-first-chart-ms"] });
    window.addEventListener("load", fetchAll, { once: true });
  }

  function start() {
    loadMathLater();
    themeCharts();
    new MutationObserver(themeCharts).observe(document.body, {
      attributes: true,
      attributeFilter: ["data-md-color-scheme"],
    });
  }

  // Loaded with `defer`: DOMContentLoaded fires after the charts' own listeners have drawn them.
  document.addEventListener("DOMContentLoaded", start);
})();
