"""`./run.sh report`: one self-contained HTML page of a lake's activity, for a person to look at.

  ./run.sh report --lake ./lake [--dest ./export ...] [--from_date D --to_date D] \\
    [--expect_by 13:00 --timezone Asia/Seoul] --out report.html

Charts (inline SVG) of events per day (written, rejected by reason, duplicates), of rows delivered
per destination and day, and of lateness against --expect_by; a table per day with the numbers of
`./run.sh status --json`, and the recent runs with links to their run reports. No script, style
sheet, font or image is fetched: the page is one file, readable without JavaScript (it has none).
Exit 0 once written, 2 for a wrong flag.
"""
import datetime
import html
import os
import sys

from pipelines import options as opts
from pipelines import status
from transforms.lake import ledger
from transforms.stores import fs

__all__ = ['COLORS', 'REJECT_COLORS', 'DEST_COLORS', 'STYLE', 'esc', 'num', 'bars', 'events_chart',
           'delivery_chart', 'lateness_chart', 'days_table', 'runs_table', 'link', 'page', 'run']

COLORS = {'written': '#2b6cb0', 'duplicates': '#a0aec0'}
REJECT_COLORS = ['#c53030', '#dd6b20', '#d69e2e', '#805ad5', '#d53f8c', '#319795', '#718096']
DEST_COLORS = ['#2f855a', '#2c7a7b', '#6b46c1', '#b7791f']
STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px; color: #1a202c; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; margin-top: 8px; }
th, td { border-bottom: 1px solid #e2e8f0; padding: 3px 10px; text-align: right; white-space: nowrap; }
th { background: #f7fafc; } td.l, th.l { text-align: left; }
.bad { color: #c53030; font-weight: 600; } .muted { color: #718096; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #4a5568; }
"""


def esc(value) -> str:
  return html.escape('' if value is None else str(value))


def num(value) -> str:
  return '' if value is None else f'{value:,}'


def bars(days: list[str], stacks: list[dict[str, float]], colors: dict[str, str], title: str,
         unit: str = 'rows') -> str:
  """A stacked bar per day as inline SVG; `stacks` holds {series: value} per day."""
  width, height, left, bottom = max(360, 40 + 28 * len(days)), 180, 56, 36
  top = max([sum(v for v in s.values() if v > 0) for s in stacks] + [1])
  step = (width - left - 10) / max(1, len(days))
  out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
         f'aria-label="{esc(title)}"><title>{esc(title)}</title>',
         f'<line x1="{left}" y1="{height - bottom}" x2="{width - 6}" y2="{height - bottom}" '
         'stroke="#a0aec0"/>',
         f'<text x="{left - 4}" y="14" text-anchor="end">{top:,.0f}</text>',
         f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>']
  scale = (height - bottom - 10) / top
  for i, (dt, stack) in enumerate(zip(days, stacks)):
    x, y = left + i * step + step * 0.15, float(height - bottom)
    for series, value in stack.items():
      if value <= 0:
        continue
      h = value * scale
      y -= h
      out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.7:.1f}" height="{h:.1f}" '
                 f'fill="{colors[series]}"><title>{esc(dt)} {esc(series)}: {value:,} {unit}'
                 '</title></rect>')
    if len(days) <= 16 or i % max(1, len(days) // 12) == 0:
      out.append(f'<text x="{x + step * 0.35:.1f}" y="{height - bottom + 14}" '
                 f'text-anchor="middle">{esc(dt[5:])}</text>')
  out.append('</svg>')
  legend = ''.join(f'<span><i style="background:{c}"></i>{esc(s)}</span>'
                   for s, c in colors.items())
  return f'<figure>{"".join(out)}<figcaption class="legend">{legend}</figcaption></figure>'


def events_chart(doc: dict) -> str:
  days = [d for d in doc['days'] if d['import']]
  reasons = sorted({r for d in days for r in d['import']['rejected_by_reason']})
  colors = {'written': COLORS['written'],
            **{f'rejected: {r}': REJECT_COLORS[i % len(REJECT_COLORS)] for i, r in enumerate(reasons)},
            'duplicates': COLORS['duplicates']}
  stacks = [{'written': d['import']['rows_written'],
             **{f'rejected: {r}': d['import']['rejected_by_reason'].get(r, 0) for r in reasons},
             'duplicates': d['import']['rows_duplicate']} for d in days]
  return bars([d['dt'] for d in days], stacks, colors, 'events per day')


def delivery_chart(doc: dict) -> str:
  out = []
  for i, dest in enumerate(doc['dests']):
    days = doc['days']
    stacks = [{dest: (d['exports'].get(dest) or {}).get('rows') or 0} for d in days]
    out.append(bars([d['dt'] for d in days], stacks, {dest: DEST_COLORS[i % len(DEST_COLORS)]},
                    f'rows delivered to {dest}'))
  return ''.join(out) or '<p class="muted">No destination given (--dest).</p>'


def lateness_chart(doc: dict) -> str:
  if not doc['expect_by']:
    return '<p class="muted">No schedule given (--expect_by, --timezone).</p>'
  hours = [round((d['late_by_s'] or 0) / 3600, 2) for d in doc['days']]
  tallest = max(hours + [1])   # a missing day is drawn full height
  stacks = [{'hours late': h, 'missing': tallest if d['late'] else 0}
            for h, d in zip(hours, doc['days'])]
  return bars([d['dt'] for d in doc['days']], stacks, {'hours late': '#dd6b20', 'missing': '#c53030'},
              f"hours after {doc['expect_by']} {doc['timezone']} on the next day", unit='')


def days_table(doc: dict) -> str:
  head = ['day', 'source', 'import', 'rows in', 'written', 'rejected', 'rejected %', 'duplicates',
          'imported at (UTC)', 'late'] + [f'-> {d}' for d in doc['dests']]
  rows = []
  for d in doc['days']:
    i = d['import'] or {}
    status_class = ' bad' if i.get('status') in ('refused', 'failed') else ''
    late = 'LATE' if d['late'] else status._span(d['late_by_s'])
    cells = [f'<td class="l">{esc(d["dt"])}</td>',
             f'<td class="l">{ {None: "", True: "ready", False: "not ready"}[d["source_ready"]] }</td>',
             f'<td class="l{status_class}" data-field="status">{esc(i.get("status", "-"))}</td>']
    for field in ('rows_in', 'rows_written', 'rows_rejected'):
      cells.append(f'<td data-field="{field}">{num(i.get(field))}</td>')
    share = f'{i["rejected_share"]:.2%}' if i else ''
    cells.append(f'<td>{share}</td><td data-field="rows_duplicate">{num(i.get("rows_duplicate"))}</td>')
    cells.append(f'<td class="l">{esc((i.get("at") or "")[:19].replace("T", " "))}</td>')
    cells.append(f'<td class="{"bad" if d["late"] else ""}" data-field="late">{esc(late)}</td>')
    for n, dest in enumerate(doc['dests']):
      e = d['exports'].get(dest)
      cells.append(f'<td data-field="export-{n}">{num(e and e["rows"])}'
                   f'{"" if not e or e["current"] else " (stale)"}</td>')
    rows.append(f'<tr data-dt="{esc(d["dt"])}">{"".join(cells)}</tr>')
  return (f'<table id="days"><tr>{"".join(f"<th>{esc(h)}</th>" for h in head)}</tr>'
          f'{"".join(rows)}</table>')


def runs_table(lake: ledger.Lake, out: str, limit: int = 30) -> str:
  rows = []
  for r in reversed(lake.runs()[-limit:]):
    statuses = sorted({d.status for d in r.days})
    path = ledger.run_report_path(lake.root, r.run_id) if r.pipeline == 'import' else None
    href = link(path, out) if path else None
    name = f'<a href="{esc(href)}">{esc(r.run_id)}</a>' if href else esc(r.run_id)
    rows.append(f'<tr><td class="l">{name}</td><td class="l">{esc(r.pipeline)}</td>'
                f'<td class="l">{esc(r.started_at.isoformat()[:19].replace("T", " "))}</td>'
                f'<td>{"" if r.seconds is None else f"{r.seconds:.1f}"}</td>'
                f'<td>{len(r.days)}</td><td>{num(sum(d.rows_in for d in r.days))}</td>'
                f'<td class="l{" bad" if set(statuses) - {"published"} else ""}">'
                f'{esc(", ".join(statuses))}</td></tr>')
  return ('<table id="runs"><tr><th class="l">run (its report)</th><th class="l">pipeline</th>'
          '<th class="l">started (UTC)</th><th>seconds</th><th>days</th><th>rows in</th>'
          f'<th class="l">status</th></tr>{"".join(rows)}</table>')


def link(path: str, out: str) -> str | None:
  """A link to a run report: relative to the page on local disk; a store's URL is shown only."""
  if '://' in path or '://' in out:
    return None
  return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(out)))


def page(doc: dict, lake: ledger.Lake, out: str) -> str:
  title = f"eventferry activity: {doc['lake']}"
  problems = ''.join(f'<p class="bad">{esc(p)}</p>' for p in doc['problems'])
  return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>{esc(title)}</title><style>{STYLE}</style></head>
<body><h1>{esc(title)}</h1>
<p class="muted">Generated {esc(doc['generated_at'])} by ./run.sh report. {len(doc['days'])} days,
<span class="{'bad' if doc['late'] else ''}">{doc['late']} late</span>,
<span class="{'bad' if doc['refused'] else ''}">{doc['refused']} refused or failed</span>.</p>
{problems}
<h2>Events per day</h2>{events_chart(doc)}
<h2>Delivery per destination</h2>{delivery_chart(doc)}
<h2>Lateness</h2>{lateness_chart(doc)}
<h2>Days</h2>{days_table(doc)}
{''.join(f'<p class="muted">-> {esc(d)}</p>' for d in doc['dests'])}
<h2>Recent runs</h2>{runs_table(lake, out)}
</body></html>
"""


def run(argv: list[str]) -> int:
  p = status.parser('./run.sh report', __doc__)
  p.add_argument('--source', help="the customer's prefix: is each day's _SUCCESS there?")
  p.add_argument('--expect_by', help='lateness against this time (HH:MM in --timezone), next day')
  p.add_argument('--out', help='the HTML file to write, e.g. report.html')
  o = status.parse(p, argv)
  opts.require(o, {'out': 'report.html'})
  doc = status.status(o)
  text = page(doc, status.lake_of(o), o.out)
  fs.write_bytes(o.out, text.encode())
  print(f'wrote {o.out} ({len(text):,} bytes, {len(doc["days"])} days) at '
        f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC')
  return 0


if __name__ == '__main__':
  sys.exit(opts.main_guard(run))
