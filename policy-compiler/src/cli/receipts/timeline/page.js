// The timeline page's filters (policyc receipts timeline, page.rs). Values come from the DOM and are
// compared as strings; nothing here writes HTML. The filter state lives in the URL fragment
// (#decision=DENY,STEP_UP&tool=deploy&trace=1), so a reviewer can share a filtered view.
(function () {
  "use strict";
  var rows = Array.prototype.slice.call(document.querySelectorAll("li.receipt"));
  var boxes = Array.prototype.slice.call(document.querySelectorAll("input[data-filter]"));
  var shown = document.getElementById("shown");
  function checked(kind) {
    var set = new Set();
    boxes.forEach(function (b) { if (b.dataset.filter === kind && b.checked) set.add(b.value); });
    return set;
  }
  function apply(write) {
    var decisions = checked("decision"), tools = checked("tool"), trace = checked("trace").size > 0;
    var n = 0;
    rows.forEach(function (r) {
      var keep = decisions.has(r.dataset.decision) && tools.has(r.dataset.tool) &&
        (!trace || r.dataset.trace === "1");
      r.hidden = !keep;
      if (keep) n += 1;
    });
    shown.textContent = String(n);
    if (write) {
      var parts = ["decision", "tool", "trace"].map(function (kind) {
        var all = boxes.filter(function (b) { return b.dataset.filter === kind; });
        var on = all.filter(function (b) { return b.checked; });
        if (on.length === all.length && kind !== "trace") return null;
        if (kind === "trace") return on.length ? "trace=1" : null;
        return kind + "=" + on.map(function (b) { return encodeURIComponent(b.value); }).join(",");
      }).filter(function (p) { return p !== null; });
      history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname);
    }
  }
  function fromHash() {
    var want = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (p) {
      var i = p.indexOf("=");
      if (i > 0) want[p.slice(0, i)] = p.slice(i + 1).split(",").map(function (v) {
        try { return decodeURIComponent(v); } catch (e) { return null; }
      });
    });
    boxes.forEach(function (b) {
      var kind = b.dataset.filter;
      if (kind === "trace") b.checked = !!want.trace;
      else if (want[kind]) b.checked = want[kind].indexOf(b.value) >= 0;
    });
  }
  boxes.forEach(function (b) { b.addEventListener("change", function () { apply(true); }); });
  document.querySelectorAll("button[data-all]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var kind = btn.dataset.all, on = btn.dataset.on === "1";
      boxes.forEach(function (b) { if (b.dataset.filter === kind) b.checked = on; });
      apply(true);
    });
  });
  window.addEventListener("hashchange", function () { fromHash(); apply(false); });
  fromHash();
  apply(false);
  document.body.dataset.ready = "1";
})();
