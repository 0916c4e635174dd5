/* davel view: the page's behaviour (no libraries, no network).
 *
 * Everything shown that comes from the user's files (labels, file names) goes
 * through textContent / attributes, never through HTML parsing, so a label that
 * looks like an HTML tag with an event handler is displayed, not run.
 */
(function () {
  "use strict";

  var data = JSON.parse(document.getElementById("davel-data").textContent);
  var byId = function (id) { return document.getElementById(id); };
  var player = byId("player");
  var timeline = byId("timeline");
  var tbody = document.querySelector("#events tbody");
  var headRow = document.querySelector("#events thead tr");
  var tip = byId("tip");
  var slider = byId("score");

  var TICK_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  var COLUMNS = [
    { key: "index", title: "#", num: true },
    { key: "label", title: "label" },
    { key: "start", title: "start", num: true },
    { key: "end", title: "end", num: true },
    { key: "length", title: "length", num: true },
    { key: "score", title: "score", num: true }
  ];

  var state = {
    video: -1,
    minScore: Math.max(0, Math.min(1, data.minScore || 0)),
    hiddenLanes: new Set(),
    sortKey: "start",
    sortDir: 1,
    selected: -1
  };
  // Per video: items[i] = {ev, bar, row, visible}; rebuilt by showVideo.
  var items = [];
  var laneRows = [];
  var cursor = null;
  var duration = 1;

  // ------------------------------------------------------------ helpers
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function clock(t, step) {
    var tenths = step < 1;
    var total = Math.round(Math.max(0, t) * (tenths ? 10 : 1));
    var whole = tenths ? Math.floor(total / 10) : total;
    var h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
    var text = (h ? h + ":" + pad2(m) : String(m)) + ":" + pad2(s);
    return tenths && total % 10 ? text + "." + (total % 10) : text;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function exact(t) {  // m:ss.cc, for the table, the tooltip and the clock
    var cs = Math.round(Math.max(0, t) * 100);
    var s = Math.floor(cs / 100), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    var rest = pad2(s % 60) + "." + pad2(cs % 100);
    return h ? h + ":" + pad2(m) + ":" + rest : m + ":" + rest;
  }

  function tickStep(d, maxTicks) {
    for (var i = 0; i < TICK_STEPS.length; i++) {
      if (d / TICK_STEPS[i] <= maxTicks) { return TICK_STEPS[i]; }
    }
    return TICK_STEPS[TICK_STEPS.length - 1];
  }

  function rgba(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16 & 255) + "," + (n >> 8 & 255) + "," + (n & 255) + "," + a.toFixed(3) + ")";
  }

  function alpha(score) { return 0.18 + 0.82 * Math.max(0, Math.min(1, score)); }

  function pct(t) { return (100 * Math.max(0, Math.min(duration, t)) / duration) + "%"; }

  // A row per item (sorted by start) so that items in a row do not overlap.
  function pack(list, maxRows) {
    var ends = [], rows = [];
    list.forEach(function (it) {
      var r = ends.findIndex(function (e) { return e <= it.start + 1e-9; });
      if (r < 0 && ends.length < maxRows) { r = ends.length; ends.push(0); }
      if (r < 0) { r = ends.indexOf(Math.min.apply(null, ends)); }
      ends[r] = Math.max(ends[r], it.end);
      rows.push(r);
    });
    return rows;
  }

  // ------------------------------------------------------------ playback
  function playFrom(t) {
    player.currentTime = Math.max(0, t);
    var p = player.play();
    if (p && p.catch) { p.catch(function () { /* not playable yet: the seek still stands */ }); }
    updateCursor();
  }

  function select(i) {
    if (state.selected >= 0 && items[state.selected]) {
      items[state.selected].bar.classList.remove("selected");
      items[state.selected].row.classList.remove("selected");
    }
    state.selected = i;
    if (i >= 0 && items[i]) {
      items[i].bar.classList.add("selected");
      items[i].row.classList.add("selected");
    }
  }

  function jump(i) {
    select(i);
    playFrom(items[i].ev.start);
  }

  function visibleInTime() {
    return items.filter(function (it) { return it.visible; })
      .sort(function (a, b) { return a.ev.start - b.ev.start || a.ev.end - b.ev.end; });
  }

  function next() {
    var t = player.currentTime, list = visibleInTime();
    var hit = list.find(function (it) { return it.ev.start > t + 0.05; });
    if (hit) { jump(hit.index); }
  }

  function previous() {
    // Just after an event's start, "previous" means the one before it, as in players.
    var t = player.currentTime, list = visibleInTime();
    for (var k = list.length - 1; k >= 0; k--) {
      if (list[k].ev.start < t - 0.3) { jump(list[k].index); return; }
    }
    if (list.length) { jump(list[0].index); }
  }

  var lastActive = new Set();
  function updateCursor() {
    var t = player.currentTime || 0;
    if (cursor) { cursor.style.left = "calc(var(--name-w) + (100% - var(--name-w)) * " + (Math.max(0, Math.min(duration, t)) / duration) + ")"; }
    byId("now").textContent = exact(t) + " / " + exact(duration);
    var active = new Set();
    items.forEach(function (it) { if (it.ev.start <= t && t < it.ev.end) { active.add(it.index); } });
    lastActive.forEach(function (i) {
      if (!active.has(i) && items[i]) { items[i].bar.classList.remove("active"); items[i].row.classList.remove("active"); }
    });
    active.forEach(function (i) { items[i].bar.classList.add("active"); items[i].row.classList.add("active"); });
    lastActive = active;
  }

  function tick() {  // smoother than timeupdate (4 Hz) while playing
    updateCursor();
    if (!player.paused && !player.ended) { window.requestAnimationFrame(tick); }
  }

  // ------------------------------------------------------------ tooltip
  function showTip(lines, x, y) {
    tip.replaceChildren();
    lines.forEach(function (line, k) { tip.appendChild(el(k ? "div" : "strong", null, line)); });
    tip.hidden = false;
    var w = tip.offsetWidth, h = tip.offsetHeight;
    tip.style.left = Math.max(4, Math.min(window.innerWidth - w - 4, x + 12)) + "px";
    tip.style.top = (y + h + 16 > window.innerHeight ? y - h - 10 : y + 14) + "px";
  }

  function hideTip() { tip.hidden = true; }

  function describe(ev) {
    return [ev.label, "score " + ev.score.toFixed(3),
      "start " + exact(ev.start) + " \u2013 end " + exact(ev.end) + " (" + (ev.end - ev.start).toFixed(2) + " s)"];
  }

  function hoverable(node, lines, linked) {
    node.addEventListener("pointerenter", function (e) {
      showTip(lines, e.clientX, e.clientY);
      if (linked) { linked.forEach(function (n) { n.classList.add("hover"); }); }
    });
    node.addEventListener("pointermove", function (e) { showTip(lines, e.clientX, e.clientY); });
    node.addEventListener("pointerleave", function () {
      hideTip();
      if (linked) { linked.forEach(function (n) { n.classList.remove("hover"); }); }
    });
    node.addEventListener("focus", function () {
      var r = node.getBoundingClientRect();
      showTip(lines, r.left, r.bottom);
    });
    node.addEventListener("blur", hideTip);
  }

  // ------------------------------------------------------------ building
  function laneRow(name, colour, extraClass) {
    var row = el("div", "tl-row" + (extraClass ? " " + extraClass : ""));
    var label = el("div", "tl-name");
    if (colour) {
      var sw = el("span", "swatch");
      sw.style.background = colour;
      label.appendChild(sw);
    }
    label.appendChild(el("span", "text", name));
    label.title = name;
    var track = el("div", "tl-track");
    row.appendChild(label);
    row.appendChild(track);
    return { row: row, track: track };
  }

  function seekOnTrack(track) {
    track.addEventListener("click", function (e) {
      if (e.target !== track) { return; }
      var r = track.getBoundingClientRect();
      select(-1);
      player.currentTime = duration * Math.max(0, Math.min(1, (e.clientX - r.left) / r.width));
      updateCursor();
    });
  }

  function buildTimeline(v) {
    timeline.replaceChildren();
    laneRows = [];
    var step = tickStep(duration, Math.max(3, Math.floor(timeline.clientWidth / 90) || 8));
    timeline.style.setProperty("--tick-size", (100 * step / duration) + "%");

    var axis = laneRow("", null, "tl-axis");
    for (var t = 0; t <= duration + 1e-9; t += step) {
      var tk = el("span", "tick" + (t > duration - 0.3 * step ? " end" : ""), clock(t, step));
      tk.style.left = pct(t);
      axis.track.appendChild(tk);
    }
    timeline.appendChild(axis.row);

    if (v.truth !== null && v.truth !== undefined) {
      var gt = laneRow("ground truth", null, "tl-truth");
      var rows = pack(v.truth, 4), n = Math.max(1, Math.max.apply(null, rows.concat([0])) + 1);
      gt.track.style.height = (0.6 + 1.1 * n) + "rem";
      v.truth.forEach(function (seg, k) {
        var lane = v.lanes[seg.lane];
        var node = el("div", "gt-seg", seg.label);
        node.style.left = pct(seg.start);
        node.style.width = "calc(" + pct(seg.end) + " - " + pct(seg.start) + ")";
        node.style.top = (0.3 + 1.1 * rows[k]) + "rem";
        node.style.height = "0.95rem";
        node.style.background = lane.colour;
        hoverable(node, ["ground truth: " + seg.label, "start " + exact(seg.start) + " \u2013 end " + exact(seg.end)]);
        gt.track.appendChild(node);
      });
      if (!v.annotated) { gt.track.appendChild(el("span", "tick", "this video is not in the annotations")); }
      timeline.appendChild(gt.row);
    }

    v.lanes.forEach(function (lane, li) {
      var built = laneRow(lane.label, lane.colour);
      built.row.dataset.lane = lane.key;
      seekOnTrack(built.track);
      var mine = items.filter(function (it) { return it.ev.lane === li; });
      var rows = pack(mine.map(function (it) { return it.ev; }), 3);
      var k = Math.max.apply(null, rows.concat([0])) + 1;
      mine.forEach(function (it, j) {
        var ev = it.ev, bar = it.bar;
        bar.style.left = pct(ev.start);
        bar.style.width = "calc(" + pct(ev.end) + " - " + pct(ev.start) + ")";
        bar.style.top = (8 + 84 * rows[j] / k) + "%";
        bar.style.height = (84 / k - (k > 1 ? 3 : 0)) + "%";
        bar.style.background = rgba(lane.colour, alpha(ev.score));
        bar.style.borderColor = lane.colour;
        built.track.appendChild(bar);
      });
      laneRows.push({ key: lane.key, row: built.row, items: mine });
      timeline.appendChild(built.row);
    });
    if (!v.lanes.length) { timeline.appendChild(laneRow("no events", null, "empty").row); }

    cursor = el("div", "tl-cursor");
    timeline.appendChild(cursor);
  }

  function buildItems(v) {
    items = v.events.map(function (ev, i) {
      var lane = v.lanes[ev.lane];
      var bar = el("button", "ev", ev.score.toFixed(2));
      bar.type = "button";
      bar.dataset.index = i;
      bar.dataset.score = ev.score;
      bar.dataset.lane = lane.key;
      bar.setAttribute("aria-label", ev.label + ", score " + ev.score.toFixed(2) + ", " + exact(ev.start) + " to " + exact(ev.end));
      var row = el("tr");
      row.tabIndex = 0;
      row.dataset.index = i;
      var cells = [i + 1, null, exact(ev.start), exact(ev.end), (ev.end - ev.start).toFixed(2) + " s", ev.score.toFixed(3)];
      cells.forEach(function (c, k) {
        var td = el("td", COLUMNS[k].num ? "num" : null);
        if (k === 1) {
          var sw = el("span", "swatch");
          sw.style.background = lane.colour;
          td.appendChild(sw);
          td.appendChild(document.createTextNode(" " + ev.label));
        } else {
          td.textContent = String(c);
        }
        row.appendChild(td);
      });
      var it = { index: i, ev: ev, bar: bar, row: row, visible: true };
      bar.addEventListener("click", function (e) { e.stopPropagation(); jump(i); });
      row.addEventListener("click", function () { jump(i); });
      row.addEventListener("keydown", function (e) { if (e.key === "Enter") { jump(i); } });
      hoverable(bar, describe(ev), [row]);
      hoverable(row, describe(ev), [bar]);
      return it;
    });
  }

  function sortValue(it, key) {
    if (key === "length") { return it.ev.end - it.ev.start; }
    if (key === "index") { return it.index; }
    if (key === "label") { return it.ev.label.toLowerCase(); }
    return it.ev[key];
  }

  function sortTable() {
    var key = state.sortKey, dir = state.sortDir;
    var sorted = items.slice().sort(function (a, b) {
      var x = sortValue(a, key), y = sortValue(b, key);
      return (x < y ? -1 : x > y ? 1 : a.index - b.index) * dir;
    });
    sorted.forEach(function (it) { tbody.appendChild(it.row); });
    Array.prototype.forEach.call(headRow.children, function (th) {
      th.setAttribute("aria-sort", th.dataset.key === key ? (dir > 0 ? "ascending" : "descending") : "none");
    });
  }

  function buildHead() {
    COLUMNS.forEach(function (col) {
      var th = el("th", col.num ? "num" : null);
      th.dataset.key = col.key;
      th.scope = "col";
      var b = el("button", null, col.title);
      b.type = "button";
      b.addEventListener("click", function () {
        // Scores read best first, everything else in ascending order first.
        state.sortDir = state.sortKey === col.key ? -state.sortDir : (col.key === "score" ? -1 : 1);
        state.sortKey = col.key;
        sortTable();
      });
      th.appendChild(b);
      headRow.appendChild(th);
    });
  }

  function buildLabelFilter(v) {
    var list = byId("label-list");
    list.replaceChildren();
    v.lanes.forEach(function (lane) {
      var label = el("label");
      var box = el("input");
      box.type = "checkbox";
      box.checked = !state.hiddenLanes.has(lane.key);
      box.dataset.lane = lane.key;
      box.addEventListener("change", function () {
        if (box.checked) { state.hiddenLanes.delete(lane.key); } else { state.hiddenLanes.add(lane.key); }
        applyFilters();
      });
      var sw = el("span", "swatch");
      sw.style.background = lane.colour;
      label.appendChild(box);
      label.appendChild(sw);
      label.appendChild(el("span", null, lane.label));
      list.appendChild(label);
    });
    byId("labels").hidden = !v.lanes.length;
  }

  function setAllLabels(on) {
    var v = data.videos[state.video];
    v.lanes.forEach(function (lane) { if (on) { state.hiddenLanes.delete(lane.key); } else { state.hiddenLanes.add(lane.key); } });
    document.querySelectorAll("#label-list input").forEach(function (box) { box.checked = on; });
    applyFilters();
  }

  function applyFilters() {
    var shown = 0;
    items.forEach(function (it) {
      it.visible = it.ev.score >= state.minScore - 1e-9 && !state.hiddenLanes.has(it.bar.dataset.lane);
      it.bar.hidden = !it.visible;
      it.row.hidden = !it.visible;
      if (it.visible) { shown++; }
    });
    laneRows.forEach(function (lr) {
      lr.row.classList.toggle("empty", !lr.items.some(function (it) { return it.visible; }));
    });
    if (state.selected >= 0 && !items[state.selected].visible) { select(-1); }
    byId("count").textContent = shown + " of " + items.length + " events shown";
    byId("score-value").textContent = state.minScore.toFixed(2);
  }

  function showVideo(index) {
    if (index === state.video) { return; }
    var v = data.videos[index];
    state.video = index;
    state.selected = -1;
    lastActive = new Set();
    duration = v.duration > 0 ? v.duration : 1;
    document.title = v.name + " \u00b7 davel view";
    byId("title").textContent = v.name;
    var meta = [v.model, "duration " + exact(v.duration), v.events.length + " events"];
    if (v.truth) { meta.push(v.truth.length + " ground-truth segments"); }
    byId("meta").textContent = meta.join(" \u00b7 ");
    byId("player-error").hidden = true;
    player.src = v.src !== null ? v.src : embedded(v.embedded);
    tbody.replaceChildren();
    buildItems(v);
    buildTimeline(v);
    buildLabelFilter(v);
    sortTable();
    applyFilters();
    updateCursor();
    document.querySelectorAll("#video-list button").forEach(function (b, k) {
      b.setAttribute("aria-current", k === index ? "true" : "false");
    });
  }

  function embedded(id) {
    var node = document.getElementById(id);
    return "data:" + node.dataset.mime + ";base64," + node.textContent.trim();
  }

  function buildVideoList() {
    if (data.videos.length < 2) { return; }
    byId("app").classList.add("multi");
    byId("videos").hidden = false;
    var ul = byId("video-list");
    data.videos.forEach(function (v, k) {
      var li = el("li");
      var b = el("button", null, v.name);
      b.type = "button";
      b.title = v.path;
      b.appendChild(el("small", null, v.events.length + " events \u00b7 " + exact(v.duration)));
      b.addEventListener("click", function () { showVideo(k); });
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  // ------------------------------------------------------------ wiring
  function typing(target) {
    var tag = target && target.tagName;
    if (tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) { return true; }
    return tag === "INPUT" && !/^(range|checkbox|radio|button)$/.test(target.type);
  }

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) { return; }
    var key = e.key.toLowerCase();
    if (key === "n" || key === "j") { next(); e.preventDefault(); }
    else if (key === "p" || key === "k") { previous(); e.preventDefault(); }
    else if (key === " " && !/^(BUTTON|VIDEO|INPUT|TR)$/.test(e.target.tagName)) {
      if (player.paused) { playFrom(player.currentTime); } else { player.pause(); }
      e.preventDefault();
    }
  });

  slider.value = String(state.minScore);
  slider.addEventListener("input", function () { state.minScore = parseFloat(slider.value) || 0; applyFilters(); });
  byId("labels-all").addEventListener("click", function () { setAllLabels(true); });
  byId("labels-none").addEventListener("click", function () { setAllLabels(false); });
  ["timeupdate", "seeked", "loadedmetadata"].forEach(function (name) { player.addEventListener(name, updateCursor); });
  player.addEventListener("play", tick);
  player.addEventListener("error", function () {
    var v = data.videos[state.video];
    var box = byId("player-error");
    box.textContent = "The browser cannot play " + v.path + " (missing next to this page, or a codec it does not support). " +
      "The timeline and the table still work.";
    box.hidden = false;
  });
  var resizeTimer = 0;
  window.addEventListener("resize", function () {
    // The tick step depends on the width; redraw once the window stops moving.
    window.clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(function () {
      buildTimeline(data.videos[state.video]);
      applyFilters();
      updateCursor();
    }, 150);
  });

  buildHead();
  buildVideoList();
  showVideo(0);
}());
