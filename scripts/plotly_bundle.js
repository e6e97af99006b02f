// The site's own Plotly bundle (`make plotly-bundle` builds docs/javascripts/plotly/plotly-site.min.js
// from it with esbuild): the core, which holds the scatter trace, plus the only two other trace
// types the site's figures draw. About 80% of the size of Plotly's "cartesian" partial bundle,
// which is what a phone on a slow link waits for before its first chart.
var Plotly = require("plotly.js/lib/core");

Plotly.register([require("plotly.js/lib/bar"), require("plotly.js/lib/heatmap")]);

module.exports = Plotly;
