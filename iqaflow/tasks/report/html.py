"""HTML of the run report: one Jinja2 template (autoescaped), no scripts, every image inline as a data URI."""

from __future__ import annotations

from typing import Any

import jinja2

from iqaflow.tasks.report.plots import STATUS_COLOURS

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>iqaflow report: {{ d.run_id }}</title>
<link rel="icon" href="data:,">
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 20px 40px; color: #222; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin-top: 30px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
nav a { margin-right: 12px; } .muted { color: #666; } code { font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 9px; border-bottom: 1px solid #eee;
        text-align: right; vertical-align: top; } th { background: #f6f6f6; }
td.l, th.l { text-align: left; } .kpi { display: inline-block; margin: 6px 18px 6px 0; }
.kpi b { display: block; font-size: 20px; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; } .plots img { border: 1px solid #eee; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { width: 180px; border: 1px solid #ddd; border-radius: 4px; padding: 6px; font-size: 11px;
        word-break: break-all; }
.card img.thumb { display: block; max-width: 168px; max-height: 168px; margin: 0 auto 4px; }
.card.kept { border: 2px solid #1a7f37; } h3 { font-size: 15px; margin: 16px 0 6px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; color: #fff; font-size: 11px; }
{% for s, c in colours.items() %}.s-{{ s }} { background: {{ c }}; }
{% endfor %}.s-error { background: #666; }
.ok { color: #1a7f37; } .fail { color: #b2182b; font-weight: bold; } .warn { color: #b35806; }
.note { background: #fff8e1; padding: 6px 10px; border-left: 3px solid #f0b400; }
</style>
</head>
<body>
<h1>iqaflow run <code>{{ d.run_id }}</code></h1>
<div class="muted">{{ d.run_root }} &middot; generated {{ d.generated }}</div>
<nav><a href="#summary">summary</a><a href="#scores">scores</a><a href="#folders">folders</a>
<a href="#worst">worst images</a>{% if d.duplicates %}<a href="#duplicates">duplicates</a>{% endif %}
<a href="#errors">errors</a><a href="#gates">gates</a><a href="#drift">drift</a></nav>
{% for n in d.notes %}<p class="note">{{ n }}</p>{% endfor %}

<h2 id="summary">Run summary</h2>
{% set s = d.summary %}
<div class="kpi">images<b>{{ s.images }}</b></div><div class="kpi">scored<b>{{ s.ok }}</b></div>
<div class="kpi">errors<b>{{ s.errors }}</b></div>
{% for k in ["pass", "flag", "reject"] %}{% if d.gated %}<div class="kpi">{{ k }}<b>{{ d.status_counts.get(k, 0) }}</b>
</div>{% endif %}{% endfor %}
{% if s.seconds is defined %}<div class="kpi">time<b>{{ "%.1f"|format(s.seconds) }} s</b></div>
<div class="kpi">throughput<b>{{ "%.1f"|format(s.images_per_second or 0) }} img/s</b></div>
<div class="kpi">shards<b>{{ s.shards }} <span class="muted">({{ s.shards_skipped }} resumed)</span></b></div>
{% endif %}
<p class="muted">results: <code>{{ d.results_dir }}</code>; source root: <code>{{ d.source_root or "-" }}</code>;
gate file: <code>{{ d.gate_file or "none" }}</code></p>
{% if s.scores %}<table><tr><th class="l">column</th><th>count</th><th>mean</th><th>p05</th><th>median</th>
<th>p95</th></tr>{% for name, st in s.scores.items() %}<tr><td class="l">{{ name }}</td><td>{{ st.count }}</td>
<td>{{ st.mean|num }}</td><td>{{ st.p05|num }}</td><td>{{ st.p50|num }}</td><td>{{ st.p95|num }}</td></tr>
{% endfor %}</table>{% endif %}

<h2 id="scores">Score histograms</h2>
<p class="muted">Stacked by gate status; dashed lines are the per-image thresholds of the gate file.</p>
<div class="plots">{% for col, png in d.histograms %}<img class="plot" alt="histogram of {{ col }}"
 src="data:image/png;base64,{{ png }}">{% else %}<p>No score columns.</p>{% endfor %}</div>

<h2 id="folders">Decisions per folder</h2>
<p class="muted">{{ d.folders_total }} folder(s) relative to the source root, most rejected first
{% if d.folders_total > d.folders|length %} (first {{ d.folders|length }} shown){% endif %}.</p>
<table class="folders"><tr><th class="l">folder</th><th>images</th><th>pass</th><th>flag</th><th>reject</th>
<th>ungated</th><th>error</th><th>reject rate</th></tr>
{% for f in d.folders %}<tr><td class="l">{{ f.folder }}</td><td>{{ f.images }}</td><td>{{ f.pass }}</td>
<td>{{ f.flag }}</td><td>{{ f.reject }}</td><td>{{ f.ungated }}</td><td>{{ f.error }}</td>
<td>{{ "%.1f%%"|format(100 * f.reject_rate) }}</td></tr>{% endfor %}</table>

<h2 id="worst">The {{ d.worst|length }} worst images</h2>
<p class="muted">Rejected before flagged before passed, then by number of reasons, then by mean percentile rank
over the scorers (oriented so that worse is higher).</p>
<div class="grid">{% for im in d.worst %}<div class="card">
{% if im.thumb %}<img class="thumb" alt="{{ im.name }}" src="data:image/jpeg;base64,{{ im.thumb }}">
{% else %}<div class="muted">{{ im.note }}</div>{% endif %}
<span class="badge s-{{ im.status }}">{{ im.status }}</span> {{ im.reasons|join(", ") }}<br>
<b>{{ im.name }}</b><br>{% for k, v in im.scores.items() %}{{ k }}={{ v|num }} {% endfor %}</div>
{% else %}<p>No scored images.</p>{% endfor %}</div>
{% set u = d.duplicates %}{% if u %}

<h2 id="duplicates">Duplicates and hygiene</h2>
{% if u.grouped %}
<div class="kpi">duplicate groups<b>{{ u.groups }}</b></div>
<div class="kpi">images in groups<b>{{ u.images_in_groups }}</b></div>
<div class="kpi">not kept<b>{{ u.duplicates }}</b></div><div class="kpi">exact copies<b>{{ u.exact }}</b></div>
<div class="kpi">near duplicates<b>{{ u.near }}</b></div>
<p class="muted">{{ u.exact_groups }} of {{ u.groups }} group(s) hold only exact copies. The {{ u.largest|length }}
largest, the kept image first (outlined); each other image shows its Hamming distance to the kept one
(0: the same pixels).</p>
{% for g in u.largest %}<h3>group {{ g.group }}: {{ g.size }} images{% if g.exact %}, exact copies{% endif %}</h3>
<div class="grid">{% for im in g.members %}<div class="card{% if im.kept %} kept{% endif %}">
{% if im.thumb %}<img class="thumb" alt="{{ im.name }}" src="data:image/jpeg;base64,{{ im.thumb }}">
{% else %}<div class="muted">{{ im.note }}</div>{% endif %}
{% if im.kept %}<b class="ok">kept</b>{% else %}distance <b>{{ im.distance|num }}</b>{% endif %}
<span class="badge s-{{ im.status }}">{{ im.status }}</span><br><b>{{ im.name }}</b></div>{% endfor %}
{% if g.size > g.members|length %}<p class="muted">and {{ g.size - g.members|length }} more</p>{% endif %}</div>
{% endfor %}{% endif %}
<table class="hygiene"><tr><th class="l">check</th><th class="l">counted as</th><th>images</th>
<th class="l">gate file rules (images)</th></tr>{% for h in u.hygiene %}<tr><td class="l">{{ h.check }}</td>
<td class="l"><code>{{ h.test }}</code></td><td>{{ h.images }}</td><td class="l">{{ h.gate or "-" }}</td></tr>
{% endfor %}</table>
<p class="muted">Hygiene thresholds are the ones the hygiene scorers document; the gate file may use others.</p>
{% endif %}

<h2 id="errors">Errors</h2>
{% if d.errors %}<table><tr><th class="l">code</th><th>images</th><th class="l">examples</th></tr>
{% for e in d.errors %}<tr><td class="l">{{ e.code }}</td><td>{{ e.count }}</td><td class="l">
{% for x in e.examples %}<code>{{ x.name }}</code> {{ x.message }}<br>{% endfor %}</td></tr>{% endfor %}
</table>{% else %}<p class="ok">Every image was read and scored.</p>{% endif %}

<h2 id="gates">Gates and routing</h2>
{% set g = d.gate_report %}
{% if g %}<p>Gate file <code>{{ g.gate_file }}</code>: {% for k, v in g.decisions.counts.items() %}
<span class="badge s-{{ k }}">{{ k }} {{ v }}</span> {% endfor %}</p>
{% if g.decisions.reasons %}<p>Reasons: {% for k, v in g.decisions.reasons.items() %}{{ k }}={{ v }}
{% endfor %}</p>{% endif %}
{% if g.collection.checks %}<table><tr><th class="l">collection gate</th><th class="l">type</th><th>on fail</th>
<th>observed</th><th class="l">expected</th><th class="l">result</th></tr>{% for c in g.collection.checks %}
<tr><td class="l">{{ c.name }}</td><td class="l">{{ c.type }}</td><td>{{ c.severity }}</td><td>{{ c.observed|num }}</td>
<td class="l">{{ c.expected }}</td><td class="l">{% if c.success is none %}not checked{% elif c.success %}
<span class="ok">pass</span>{% elif c.severity == "fail" %}<span class="fail">FAIL</span>{% else %}
<span class="warn">warn</span>{% endif %} <span class="muted">{{ c.detail }}</span></td></tr>{% endfor %}
</table>{% endif %}
<p>Routing: {% if g.routing.applied %}applied{% else %}dry run{% endif %}{% if g.routing.blocked %}
(blocked: {{ g.routing.blocked }}){% endif %}{% for k, v in g.routing.counts.items() %}; rule {{ k }}:
{% for st, n in v.items() %}{{ st }}={{ n }} {% endfor %}{% endfor %}</p>
{% else %}<p class="muted">This run has no gate report.</p>{% endif %}

<h2 id="drift">Drift against a baseline</h2>
{% if d.drift %}<p>Baseline run <code>{{ d.baseline }}</code>.</p>
<table><tr><th class="l">column</th><th>KS</th><th>Wasserstein</th><th>mean</th><th>baseline mean</th>
<th>median</th><th>baseline median</th><th>n</th><th>baseline n</th></tr>{% for r in d.drift %}
<tr><td class="l">{{ r.column }}</td><td>{{ r.ks|num }}</td><td>{{ r.wasserstein|num }}</td><td>{{ r.mean|num }}</td>
<td>{{ r.baseline_mean|num }}</td><td>{{ r.median|num }}</td><td>{{ r.baseline_median|num }}</td><td>{{ r.n }}</td>
<td>{{ r.baseline_n }}</td></tr>{% endfor %}</table>
<div class="plots">{% for r in d.drift %}<img class="plot" alt="drift of {{ r.column }}"
 src="data:image/png;base64,{{ r.plot }}">{% endfor %}</div>
{% else %}<p class="muted">No baseline run given (<code>--baseline</code>, or <code>baseline</code> in the run
config).</p>{% endif %}
</body>
</html>
"""


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4g}"
    return str(value)


def render(data: Any) -> str:
    """The report as HTML text; every value is escaped, so file names cannot inject markup."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=False)
    env.filters["num"] = _num
    return env.from_string(TEMPLATE).render(d=data, colours=STATUS_COLOURS)
