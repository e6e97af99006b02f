// Stands where nbconvert would load MathJax from a CDN: KaTeX (site.js) renders the math instead.
