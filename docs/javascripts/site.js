// Math with the local KaTeX, and Plotly charts that follow the light/dark palette.
(function () {
  function renderMath() {
    if (!window.renderMathInElement) return;
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
      if (!el.layout) return;
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

  function start() {
    renderMath();
    themeCharts();
    new MutationObserver(themeCharts).observe(document.body, {
      attributes: true,
      attributeFilter: ["data-md-color-scheme"],
    });
  }

  // Loaded with `defer`: DOMContentLoaded fires after the charts' own listeners have drawn them.
  document.addEventListener("DOMContentLoaded", start);
})();
