// faust-rs live dashboard: reads /stats/stream (server-sent events, one `stats` event a
// second) and draws the figures on small canvas charts. No dependencies, no CDN. Every
// name from the server reaches the page through textContent, never as HTML.
(function () {
  'use strict';

  var SPAN_MS = 120000; // the charts show the last two minutes
  var COLORS = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2',
    '#db2777', '#4b5563', '#65a30d', '#9333ea'];

  function fmt(v, digits) {
    if (v === null || v === undefined || isNaN(v)) { return '–'; }
    return Number(v).toLocaleString('en-US', {
      maximumFractionDigits: digits === undefined ? 1 : digits
    });
  }

  // A y-axis maximum of 1, 2 or 5 times a power of ten, at least `max`.
  function niceMax(max) {
    if (!(max > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(max)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * p >= max) { return steps[i] * p; }
    }
    return 10 * p;
  }

  function Chart(figure) {
    this.figure = figure;
    this.canvas = figure.querySelector('canvas');
    this.legend = figure.querySelector('.legend');
    this.unit = figure.getAttribute('data-unit') || '';
    this.series = {};   // name -> {color, points: [[t, v]], last}
    this.order = [];
    this.points = 0;    // points received (all series)
  }

  Chart.prototype.push = function (t, values) {
    var names = Object.keys(values);
    for (var i = 0; i < names.length; i++) {
      var name = names[i];
      var v = values[name];
      var s = this.series[name];
      if (!s) {
        s = this.series[name] = {
          color: COLORS[this.order.length % COLORS.length], points: [], last: null
        };
        this.order.push(name);
      }
      s.points.push([t, (typeof v === 'number' && isFinite(v)) ? v : null]);
      s.last = v;
      while (s.points.length && s.points[0][0] < t - SPAN_MS) { s.points.shift(); }
      this.points++;
    }
    this.figure.setAttribute('data-points', String(this.points));
    this.figure.setAttribute('data-series', String(this.order.length));
    this.draw(t);
    this.drawLegend();
  };

  Chart.prototype.drawLegend = function () {
    var ul = this.legend;
    while (ul.firstChild) { ul.removeChild(ul.firstChild); }
    for (var i = 0; i < this.order.length; i++) {
      var name = this.order[i];
      var s = this.series[name];
      var li = document.createElement('li');
      var swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = s.color;
      var label = document.createElement('span');
      label.textContent = name + ' ';
      var value = document.createElement('b');
      value.textContent = fmt(s.last, 2) + (this.unit ? ' ' + this.unit : '');
      li.appendChild(swatch);
      li.appendChild(label);
      li.appendChild(value);
      ul.appendChild(li);
    }
  };

  Chart.prototype.draw = function (now) {
    var canvas = this.canvas;
    var dpr = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || 600;
    var h = canvas.clientHeight || 220;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    var ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var left = 56, right = 10, top = 10, bottom = 24;
    var pw = w - left - right, ph = h - top - bottom;
    var max = 0;
    for (var n = 0; n < this.order.length; n++) {
      var pts = this.series[this.order[n]].points;
      for (var k = 0; k < pts.length; k++) {
        if (pts[k][1] !== null && pts[k][1] > max) { max = pts[k][1]; }
      }
    }
    max = niceMax(max);
    var t0 = now - SPAN_MS;
    function x(t) { return left + (t - t0) / SPAN_MS * pw; }
    function y(v) { return top + ph - v / max * ph; }

    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.strokeStyle = '#e5e7eb';
    ctx.fillStyle = '#6b7280';
    ctx.textAlign = 'right';
    ctx.textBaseline = 'middle';
    for (var g = 0; g <= 4; g++) {
      var gv = max * g / 4;
      var gy = Math.round(y(gv)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, gy);
      ctx.lineTo(left + pw, gy);
      ctx.stroke();
      ctx.fillText(fmt(gv, 2), left - 6, gy);
    }
    ctx.textAlign = 'center';
    ctx.textBaseline = 'top';
    for (var s = 0; s <= SPAN_MS / 1000; s += 30) {
      var gx = Math.round(x(now - s * 1000)) + 0.5;
      ctx.fillText(s === 0 ? 'now' : '-' + s + ' s', gx, top + ph + 6);
    }

    ctx.lineWidth = 2;
    ctx.lineJoin = 'round';
    // The first series (the main one) is drawn last, on top of the others.
    for (var i = this.order.length - 1; i >= 0; i--) {
      var series = this.series[this.order[i]];
      ctx.strokeStyle = series.color;
      ctx.beginPath();
      var drawing = false;
      for (var j = 0; j < series.points.length; j++) {
        var p = series.points[j];
        if (p[1] === null) { drawing = false; continue; }
        if (drawing) {
          ctx.lineTo(x(p[0]), y(p[1]));
        } else {
          ctx.moveTo(x(p[0]), y(p[1]));
          drawing = true;
        }
      }
      ctx.stroke();
      var lastPoint = series.points[series.points.length - 1];
      if (lastPoint && lastPoint[1] !== null) {
        ctx.fillStyle = series.color;
        ctx.beginPath();
        ctx.arc(x(lastPoint[0]), y(lastPoint[1]), 2.5, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  };

  // Rows of a figures table: [[name, n, rate], ...], names as text.
  function fillTable(id, rows) {
    var tbody = document.querySelector('#' + id + ' tbody');
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    if (!rows.length) {
      var tr0 = document.createElement('tr');
      var td0 = document.createElement('td');
      td0.colSpan = 3;
      td0.className = 'muted';
      td0.textContent = 'none yet';
      tr0.appendChild(td0);
      tbody.appendChild(tr0);
      return;
    }
    for (var i = 0; i < rows.length; i++) {
      var tr = document.createElement('tr');
      for (var c = 0; c < 3; c++) {
        var td = document.createElement('td');
        td.textContent = c === 0 ? rows[i][0] : fmt(rows[i][c], c === 2 ? 1 : 0);
        if (c > 0) { td.className = 'num'; }
        tr.appendChild(td);
      }
      tbody.appendChild(tr);
    }
  }

  function rows(totals, rates) {
    var out = [];
    var names = Object.keys(totals || {}).sort();
    for (var i = 0; i < names.length; i++) {
      out.push([names[i], totals[names[i]], (rates || {})[names[i]] || 0]);
    }
    return out;
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }

  function latency(l) {
    if (!l || !l.count) { return null; }
    return l.recent_avg_ms === null || l.recent_avg_ms === undefined ? l.last_ms : l.recent_avg_ms;
  }

  var charts = {};
  var figures = document.querySelectorAll('figure.chart');
  for (var f = 0; f < figures.length; f++) {
    charts[figures[f].getAttribute('data-chart')] = new Chart(figures[f]);
  }

  var state = { updates: 0, charts: charts, last: null, errors: 0 };
  window.faustDashboard = state;

  function update(s) {
    var t = Date.now();
    state.updates++;
    state.last = s;
    document.body.setAttribute('data-updates', String(state.updates));

    setText('v-events_per_s', fmt(s.events_per_s));
    setText('v-events_total', fmt(s.events_total, 0));
    setText('v-messages_per_s', fmt(s.messages_per_s));
    setText('v-table_writes', fmt(s.table_writes, 0));
    setText('v-processing', fmt(s.processing && s.processing.avg_ms, 2) + ' ms');
    setText('v-commit', fmt(s.commit && s.commit.avg_ms, 2) + ' ms');
    setText('v-uptime', fmt(s.uptime_s, 0) + ' s');

    if (charts.events) {
      charts.events.push(t, {
        'events/s': s.events_per_s,
        'messages in/s': s.messages_per_s,
        'table writes/s': s.table_writes_per_s
      });
    }
    if (charts.topics) {
      charts.topics.push(t, s.events_per_s_by_topic || {});
    }
    if (charts.latency) {
      var l = { processing: latency(s.processing) };
      var ops = ['commit', 'send', 'through', 'group_by'];
      for (var i = 0; i < ops.length; i++) {
        if (s[ops[i]] && s[ops[i]].count) { l[ops[i]] = latency(s[ops[i]]); }
      }
      charts.latency.push(t, l);
    }
    fillTable('t-topics', rows(s.events_by_topic, s.events_per_s_by_topic));
    fillTable('t-agents', rows(s.events_by_agent, s.events_per_s_by_agent));
    fillTable('t-tables', rows(s.table_writes_by_table, s.table_writes_per_s_by_table));
  }

  var conn = document.getElementById('conn');
  function status(text, cls) {
    if (conn) {
      conn.textContent = text;
      conn.className = 'pill ' + cls;
    }
  }

  if (!window.EventSource) {
    status('this browser has no EventSource', 'bad');
    return;
  }
  var source = new EventSource(document.body.getAttribute('data-stream') || '/stats/stream');
  source.addEventListener('open', function () { status('live', 'ok'); });
  source.addEventListener('error', function () {
    state.errors++;
    status('reconnecting…', 'bad');
  });
  source.addEventListener('stats', function (e) {
    try {
      update(JSON.parse(e.data));
      status('live', 'ok');
    } catch (err) {
      state.errors++;
      status('bad data: ' + err, 'bad');
    }
  });
})();
