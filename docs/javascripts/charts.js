// Draws the charts that blog/render.py leaves in the page as JSON, without blocking its
// first paint: plotly.js and this file load with `defer`, charts near the viewport are
// drawn first and the rest when the browser is idle. Each chart follows Material's
// palette (light "default" / dark "slate") and adapts to narrow screens.
(function () {
  "use strict";

  var NARROW = 500; // px of the chart's own column: below this it takes its phone layout
  // A finger that lands on a chart must scroll the page, not zoom the chart: on a phone-width
  // column, or where the main pointer is a finger, charts take no drag (no zoom box, no pan).
  // With a mouse on a wide column, drag-zoom stays, and a double click resets it.
  var COARSE = window.matchMedia ? window.matchMedia("(pointer: coarse)") : { matches: false };
  var charts = []; // {container, target, text, dark, config, drawn, state}

  function scheme() {
    return document.body.getAttribute("data-md-color-scheme") === "slate" ? "dark" : "light";
  }

  // Every colour in a figure is one of the theme's light values; blog.theme gives the
  // map to their dark twins, so switching is a replacement of exact JSON strings, and of
  // the inline styles of Plotly's text markup (`<span style="color:#2e7d32">`).
  function recolor(text, map) {
    Object.keys(map).forEach(function (light) {
      text = text.split(JSON.stringify(light)).join(JSON.stringify(map[light]));
      text = text.split("color:" + light).join("color:" + map[light]);
    });
    return text;
  }

  // The title of the view the reader picked with the GPU/dtype buttons, if any.
  function pickedTitle(layout) {
    var menu = (layout.updatemenus || [])[0];
    if (!menu) return null;
    var button = menu.buttons[menu.active || 0];
    return button && button.args[1] ? button.args[1]["title.text"] : null;
  }

  // Facets in a grid of `cols` columns (row-major, in the order the figure made them).
  function reflow(layout, facets, cols) {
    var rows = Math.ceil(facets.panels / cols);
    var plotHeight = rows * facets.panel_height;
    var xgap = cols > 1 ? 0.1 : 0;
    var ygap = rows > 1 ? 90 / plotHeight : 0; // room for a panel title and the axis below it
    var w = (1 - xgap * (cols - 1)) / cols;
    var h = (1 - ygap * (rows - 1)) / rows;
    for (var i = 0; i < facets.panels; i++) {
      var r = Math.floor(i / cols), c = i % cols, suffix = i ? String(i + 1) : "";
      var x = layout["xaxis" + suffix] || {}, y = layout["yaxis" + suffix] || {};
      x.domain = [c * (w + xgap), c * (w + xgap) + w];
      y.domain = [1 - r * (h + ygap) - h, 1 - r * (h + ygap)];
      y.showticklabels = c === 0;
      // Panels that now start a row show their values, so they get the first panel's axis title too.
      if (c === 0 && !(y.title && y.title.text) && layout.yaxis && layout.yaxis.title) y.title = layout.yaxis.title;
      layout["xaxis" + suffix] = x;
      layout["yaxis" + suffix] = y;
    }
    layout.height += (rows - facets.rows) * facets.panel_height;
  }

  // Below PICK_ROWS rows of panels a phone shows them stacked; above, one panel at a time
  // with a picker, so a chart stays about one screen tall.
  var PICK_ROWS = 2;

  // The panel count of a phone layout that shows one panel at a time, or 0 if it stacks them.
  function pickerPanels(layout, width) {
    var facets = (layout.meta || {}).facets;
    if (!facets || width >= NARROW) return 0;
    var cols = width < 360 ? 1 : Math.min(facets.cols, facets.narrow_cols);
    return cols < facets.cols && Math.ceil(facets.panels / cols) > PICK_ROWS ? facets.panels : 0;
  }

  // Panel k fills the plot area; the others shrink to nothing at its corner with their axes,
  // titles and shapes hidden (their traces are clipped away, so the legend and the view
  // buttons, which set trace visibility, work as before).
  function pickPanel(layout, facets, k) {
    var hidden = {};
    for (var i = 0; i < facets.panels; i++) {
      var suffix = i ? String(i + 1) : "";
      var x = layout["xaxis" + suffix] || {}, y = layout["yaxis" + suffix] || {};
      if (i === k) {
        x.domain = [0, 1];
        y.domain = [0, 1];
        y.showticklabels = true;
        if (!(y.title && y.title.text) && layout.yaxis && layout.yaxis.title) y.title = layout.yaxis.title;
      } else {
        x.domain = [0, 0.001];
        y.domain = [0, 0.001];
        x.visible = false;
        y.visible = false;
        hidden["x" + suffix] = hidden["y" + suffix] = true;
      }
      layout["xaxis" + suffix] = x;
      layout["yaxis" + suffix] = y;
    }
    function onHidden(item) {
      return [item.xref, item.yref].some(function (ref) { return ref && hidden[String(ref).split(" ")[0]]; });
    }
    (layout.annotations || []).forEach(function (a) { if (onHidden(a)) a.visible = false; });
    (layout.shapes || []).forEach(function (sh) { if (onHidden(sh)) sh.visible = false; });
    layout.height += (1 - facets.rows) * facets.panel_height;
  }

  // The picker's labels: the panels' own titles (annotations tied to each panel's domain).
  function panelTitles(layout, facets) {
    var titles = [];
    for (var i = 0; i < facets.panels; i++) {
      var ref = "x" + (i ? String(i + 1) : "") + " domain";
      var a = (layout.annotations || []).filter(function (an) { return an.xref === ref; })[0];
      titles.push(a ? String(a.text).replace(/<[^>]+>/g, "") : "panel " + (i + 1));
    }
    return titles;
  }

  function picker(chart, layout) {
    var facets = layout.meta.facets;
    var box = chart.container.querySelector(".panel-picker");
    if (!box) {
      box = document.createElement("div");
      box.className = "panel-picker";
      box.setAttribute("role", "group");
      box.setAttribute("aria-label", "Panel shown");
      panelTitles(layout, facets).forEach(function (text, k) {
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = text;
        b.addEventListener("click", function () {
          chart.panel = k;
          chart.state = null;
          draw(chart);
        });
        box.appendChild(b);
      });
      chart.container.insertBefore(box, chart.target);
    }
    box.hidden = false;
    Array.prototype.forEach.call(box.children, function (b, k) {
      b.setAttribute("aria-pressed", String(k === chart.panel));
    });
  }

  function narrowLayout(layout, width, chart) {
    var meta = layout.meta || {};
    layout.title = Object.assign({}, layout.title, { text: meta.short_title || (layout.title || {}).text });
    layout.title.font = Object.assign({}, layout.title.font, { size: 14 });
    layout.margin = Object.assign({}, layout.margin, { l: 48, r: 8 });
    (layout.updatemenus || []).forEach(function (menu) {
      menu.type = "dropdown"; // a row of buttons would not fit
      menu.direction = "down";
      // The short title stays when a view is picked: the dropdown names the view, and a long
      // view title would run off a phone's screen.
      (menu.buttons || []).forEach(function (b) {
        if (b.args && b.args[1] && "title.text" in b.args[1]) delete b.args[1]["title.text"];
      });
    });
    var facets = meta.facets;
    if (facets && pickerPanels(layout, width)) {
      pickPanel(layout, facets, chart.panel || 0);
    } else if (facets) {
      // Two columns of panels need about 360 px; below that, one column.
      var cols = width < 360 ? 1 : Math.min(facets.cols, facets.narrow_cols);
      if (cols < facets.cols) reflow(layout, facets, cols);
    }
    Object.keys(layout).forEach(function (key) {
      if (/^[xy]axis\d*$/.test(key)) {
        layout[key].tickfont = Object.assign({}, layout[key].tickfont, { size: 10 });
        layout[key].title = Object.assign({}, layout[key].title, { font: { size: 11 } });
      }
    });
    // Room under the plot for the template's legend, which sits at the container's bottom and
    // wraps into more rows on a phone. Figures without a legend, or with one placed elsewhere,
    // keep their height.
    var legend = layout.legend || {};
    if (layout.showlegend !== false && legend.yref !== "paper") {
      layout.margin.b = Math.max(layout.margin.b || 0, 60);
      layout.height += 40 + 18 * Math.ceil(legendEntries(layout) / 2);
    }
  }

  // Fixed axes and no drag mode: Plotly then leaves touch gestures to the page (scroll, pinch).
  function noDrag(layout) {
    layout.dragmode = false;
    Object.keys(layout).forEach(function (key) {
      if (/^[xy]axis\d*$/.test(key)) layout[key].fixedrange = true;
    });
    if (!layout.xaxis) layout.xaxis = { fixedrange: true };
    if (!layout.yaxis) layout.yaxis = { fixedrange: true };
  }

  function legendEntries(layout) {
    var entries = layout.meta && layout.meta.legend_entries;
    return typeof entries === "number" ? entries : 4;
  }

  function draw(chart) {
    load(chart);
    var width = chart.container.clientWidth;
    var narrow = width < NARROW;
    var state = scheme() + ":" + (narrow ? (width < 360 ? "one-column" : "narrow") : "wide") +
      (COARSE.matches ? ":touch" : "") + ":" + (chart.panel || 0);
    if (chart.state === state) return Promise.resolve();
    var fig = JSON.parse(scheme() === "dark" ? recolor(chart.text, chart.dark) : chart.text);
    var old = chart.target.data ? chart.target : null;
    if (old) {
      // Keep what the reader chose (GPU/dtype view, hidden series) across a redraw.
      fig.data.forEach(function (trace, i) {
        if (old.data[i]) trace.visible = old.data[i].visible;
      });
      (fig.layout.updatemenus || []).forEach(function (menu, i) {
        menu.active = old.layout.updatemenus[i].active;
      });
      var picked = pickedTitle(fig.layout);
      if (picked && !narrow) fig.layout.title = Object.assign({}, fig.layout.title, { text: picked });
    }
    if (narrow) narrowLayout(fig.layout, width, chart);
    var pick = chart.container.querySelector(".panel-picker");
    if (narrow && pickerPanels(fig.layout, width)) picker(chart, fig.layout);
    else if (pick) pick.hidden = true;
    var touch = narrow || COARSE.matches;
    if (touch) noDrag(fig.layout);
    var config = Object.assign({}, chart.config, { displayModeBar: touch ? false : "hover" });
    chart.state = state;
    return Plotly.react(chart.target, fig.data, fig.layout, config).then(function () {
      chart.target.setAttribute("data-theme", scheme());
      if (!chart.container.hasAttribute("data-drawn")) chart.container.setAttribute("data-drawn-ms", String(Math.round(performance.now())));
      chart.container.setAttribute("data-drawn", "");
      chart.drawn = true;
      // For the throttled-phone test: when the first chart was on screen, since navigation.
      var root = document.documentElement;
      if (!root.hasAttribute("data-first-chart-ms")) root.setAttribute("data-first-chart-ms", String(Math.round(performance.now())));
      if (charts.every(function (c) { return c.drawn; })) {
        document.documentElement.setAttribute("data-charts", "drawn");
      }
    });
  }

  // A chart's JSON is read when it is first drawn, not all at once up front: a post holds a
  // few hundred KB of it, which a slow phone would otherwise parse before its first chart.
  function load(chart) {
    if (chart.text) return;
    var payload = JSON.parse(chart.container.querySelector('script[type="application/json"]').textContent);
    chart.text = JSON.stringify(payload.figure);
    chart.dark = payload.dark;
    chart.config = payload.config;
  }

  function collect() {
    charts = Array.prototype.map.call(document.querySelectorAll(".plotly-chart"), function (container) {
      return {
        container: container,
        target: container.querySelector(".plotly-graph-div"),
        text: null,
        drawn: false,
        state: null,
      };
    });
    document.documentElement.setAttribute("data-charts", charts.length ? "pending" : "drawn");
  }

  // Charts near the viewport first; the rest one at a time when the browser is idle.
  function drawAll() {
    var idle = window.requestIdleCallback || function (fn) { return setTimeout(fn, 50); };
    var queue = charts.slice();
    // The first chart on screen now is drawn at once, before the page's other start-up work;
    // the rest follow in tasks of their own, so the browser can paint it first.
    // A link to a #fragment lands the reader there, but the browser may not have scrolled yet:
    // then the screen to fill is the one that starts at the fragment's target.
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id ? document.getElementById(id) : null;
    var top = target && window.scrollY === 0 ? target.getBoundingClientRect().top : 0;
    var onScreen = charts.filter(function (c) {
      var box = c.container.getBoundingClientRect();
      return box.bottom > top && box.top < top + window.innerHeight;
    });
    if (onScreen.length) draw(onScreen[0]);
    function next() {
      var chart = queue.shift();
      if (!chart) return;
      (chart.drawn ? Promise.resolve() : draw(chart)).then(function () { idle(next); });
    }
    if ("IntersectionObserver" in window) {
      // One chart per task: the browser paints each as it is drawn, the nearest first.
      var near = [];
      var drawNear = function () {
        var chart = near.shift();
        if (!chart) return;
        if (!chart.drawn) draw(chart);
        if (near.length) setTimeout(drawNear, 0);
      };
      var seen = new IntersectionObserver(function (entries) {
        var start = !near.length;
        entries.forEach(function (entry) {
          if (!entry.isIntersecting) return;
          seen.unobserve(entry.target);
          charts.forEach(function (c) { if (c.container === entry.target && !c.drawn) near.push(c); });
        });
        near.sort(function (a, b) {
          return Math.abs(a.container.getBoundingClientRect().top) - Math.abs(b.container.getBoundingClientRect().top);
        });
        if (start) drawNear();
      }, { rootMargin: "300px 0px" });
      charts.forEach(function (c) { seen.observe(c.container); });
    }
    idle(next);
  }

  function redrawDrawn() {
    charts.forEach(function (c) { if (c.drawn) draw(c); });
  }

  var started = null; // the document whose charts are collected
  function start() {
    if (started === document.body) return;
    if (!window.Plotly) {
      window.addEventListener("load", start, { once: true }); // plotly.js not executed yet
      return;
    }
    started = document.body;
    collect();
    drawAll();
  }

  new MutationObserver(redrawDrawn).observe(document.body, {
    attributes: true, attributeFilter: ["data-md-color-scheme"],
  });
  var resizing = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizing);
    resizing = setTimeout(redrawDrawn, 150); // only charts that cross the narrow width change
  });

  // A deferred script runs once the page is parsed: the charts start at once, before
  // DOMContentLoaded's listeners (KaTeX's pass over the page among them) take the main thread.
  // Material's instant navigation, if turned on, swaps pages and announces each on document$.
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  if (window.document$ && typeof window.document$.subscribe === "function") window.document$.subscribe(start);
})();
