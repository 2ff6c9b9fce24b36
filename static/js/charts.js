/* Draw every Plotly figure the server rendered into a data-figure attribute (CSP: no inline scripts).
   Runs on page load and on every htmx:load (each swapped-in fragment), so a panel that reloads itself
   every 60 s is drawn again; an element is drawn once (data-drawn). */
(function () {
  "use strict";
  var config = { displayModeBar: false, responsive: true };

  function draw(root) {
    if (!root || !root.querySelectorAll || typeof Plotly === "undefined") { return; }
    var nodes = root.matches && root.matches("[data-figure]") ? [root] : [];
    nodes = nodes.concat(Array.prototype.slice.call(root.querySelectorAll("[data-figure]")));
    nodes.forEach(function (el) {
      if (el.hasAttribute("data-drawn")) { return; }
      el.setAttribute("data-drawn", "pending");
      try {
        var figure = JSON.parse(el.getAttribute("data-figure"));
        Plotly.newPlot(el, figure.data || [], figure.layout || {}, config).then(function () {
          el.setAttribute("data-drawn", "yes");
        });
      } catch (err) {
        el.setAttribute("data-drawn", "error");
        el.textContent = "This chart could not be drawn.";
        if (window.console) { console.error(err); }
      }
    });
  }

  document.addEventListener("htmx:load", function (event) { draw(event.detail && event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { draw(document.body); });
})();
