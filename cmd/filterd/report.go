package main

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"

	"github.com/filterd/filterd/engine"
)

// writeHTMLReport writes a self-contained page (inline SVG, no scripts, no
// external resources) with the replay's plots and tables.
func writeHTMLReport(w io.Writer, s *engine.Summary) error {
	data := struct {
		S        *engine.Summary
		Packets  template.HTML
		SYNs     template.HTML
		RuleBars template.HTML
		TopBars  template.HTML
		Title    string
	}{
		S:        s,
		Packets:  lineChart("packets per second", s.Seconds, func(c engine.SecondCount) (float64, float64) { return float64(c.Offered), float64(c.Accepted) }),
		SYNs:     lineChart("SYNs per second", s.Seconds, func(c engine.SecondCount) (float64, float64) { return float64(c.OfferedSYN), float64(c.AcceptedSYN) }),
		RuleBars: ruleBars(s),
		TopBars:  topBars(s),
		Title:    "filterd replay: " + strings.Join(s.Files, ", "),
	}
	return reportTmpl.Execute(w, data)
}

var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}
tr:nth-child(even){background:#f6f6f6}code{font-size:12px}
.kpi{display:inline-block;margin:0 2em 1em 0}.kpi b{display:block;font-size:1.6em}
</style></head><body>
<h1>{{.Title}}</h1>
<div class="kpi"><b>{{.S.Packets}}</b>packets</div>
{{range .S.Verdicts}}<div class="kpi"><b>{{.Packets}}</b>{{.Verdict}}</div>{{end}}
{{if .S.Error}}<p><strong>Replay stopped early:</strong> {{.S.Error}}</p>{{end}}
<h2>Offered and accepted packets</h2>{{.Packets}}
<h2>Offered and accepted SYNs</h2>{{.SYNs}}
<h2>Verdicts by rule</h2>{{.RuleBars}}
<h2>Top dropped sources</h2>{{.TopBars}}
<h2>Conntrack states</h2>
<table><tr><th>state</th><th>packets</th></tr>{{range .S.States}}<tr><td>{{.State}}</td><td>{{.Packets}}</td></tr>{{end}}</table>
<h2>Families</h2>
<table><tr><th>family</th><th>rules</th><th>packets</th></tr>{{range .S.Families}}<tr><td>{{.Family}}</td><td>{{if .Filtered}}{{.Rules}}{{else}}unfiltered (tracked and counted){{end}}</td><td>{{.Packets}}</td></tr>{{end}}</table>
</body></html>
`))

// lineChart draws two series (offered, accepted) over seconds as inline SVG.
func lineChart(title string, secs []engine.SecondCount, f func(engine.SecondCount) (float64, float64)) template.HTML {
	const W, H, L, B = 900.0, 260.0, 60.0, 30.0
	if len(secs) == 0 {
		return template.HTML("<p>no packets</p>")
	}
	maxY := 1.0
	for _, c := range secs {
		a, b := f(c)
		maxY = math.Max(maxY, math.Max(a, b))
	}
	x := func(i int) float64 {
		if len(secs) == 1 {
			return L
		}
		return L + float64(i)*(W-L-10)/float64(len(secs)-1)
	}
	y := func(v float64) float64 { return H - B - v/maxY*(H-B-10) }
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" role="img" aria-label="%s">`, W, H, template.HTMLEscapeString(title))
	fmt.Fprintf(&sb, `<line x1="%g" y1="%g" x2="%g" y2="%g" stroke="#999"/><line x1="%g" y1="10" x2="%g" y2="%g" stroke="#999"/>`, L, H-B, W-10, H-B, L, L, H-B)
	for _, frac := range []float64{0, 0.5, 1} {
		fmt.Fprintf(&sb, `<text x="%g" y="%g" font-size="11" text-anchor="end">%.0f</text>`, L-4, y(frac*maxY)+4, frac*maxY)
	}
	fmt.Fprintf(&sb, `<text x="%g" y="%g" font-size="11">0 s</text><text x="%g" y="%g" font-size="11" text-anchor="end">%d s</text>`, L, H-B+16, W-10, H-B+16, len(secs)-1)
	for k, color := range []string{"#d62728", "#2ca02c"} {
		var pts []string
		for i, c := range secs {
			a, b := f(c)
			v := a
			if k == 1 {
				v = b
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
		}
		if len(pts) == 1 {
			fmt.Fprintf(&sb, `<circle cx="%s" r="4" fill="%s"/>`, strings.Replace(pts[0], ",", `" cy="`, 1), color)
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, strings.Join(pts, " "))
	}
	fmt.Fprintf(&sb, `<rect x="%g" y="12" width="10" height="10" fill="#d62728"/><text x="%g" y="21" font-size="12">offered</text>`, W-170, W-156)
	fmt.Fprintf(&sb, `<rect x="%g" y="12" width="10" height="10" fill="#2ca02c"/><text x="%g" y="21" font-size="12">accepted</text>`, W-90, W-76)
	sb.WriteString("</svg>")
	return template.HTML(sb.String())
}

type bar struct {
	label string
	value uint64
	note  string
}

func bars(items []bar) template.HTML {
	if len(items) == 0 {
		return template.HTML("<p>none</p>")
	}
	var maxV uint64 = 1
	for _, it := range items {
		maxV = max(maxV, it.value)
	}
	// A monospace character at 11 px is about 6.7 px wide: labels longer
	// than fit are cut, and the whole text is the row's tooltip.
	const rowH, labelW, barW, maxChars = 22.0, 440.0, 300.0, 62
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g">`, labelW+barW+220, rowH*float64(len(items))+4)
	for i, it := range items {
		yy := float64(i) * rowH
		w := float64(it.value) / float64(maxV) * barW
		label := it.label
		if len(label) > maxChars {
			label = label[:maxChars-3] + "..."
		}
		fmt.Fprintf(&sb, `<g><title>%s</title>`, template.HTMLEscapeString(it.label))
		fmt.Fprintf(&sb, `<text x="0" y="%g" font-size="11" font-family="monospace">%s</text>`, yy+15, template.HTMLEscapeString(label))
		fmt.Fprintf(&sb, `<rect x="%g" y="%g" width="%.1f" height="16" fill="#1f77b4"/>`, labelW, yy+3, math.Max(w, 1))
		fmt.Fprintf(&sb, `<text x="%g" y="%g" font-size="11">%d%s</text>`, labelW+w+6, yy+15, it.value, template.HTMLEscapeString(it.note))
		sb.WriteString("</g>")
	}
	sb.WriteString("</svg>")
	return template.HTML(sb.String())
}

func ruleBars(s *engine.Summary) template.HTML {
	var items []bar
	for _, c := range s.Chains {
		for _, r := range c.Rules {
			items = append(items, bar{label: fmt.Sprintf("%s %s", c.Family, r.Rule), value: r.Packets})
		}
		if c.Policy != "-" {
			items = append(items, bar{label: fmt.Sprintf("%s :%s policy %s", c.Family, c.Chain, c.Policy), value: c.PolicyPackets})
		}
	}
	return bars(items)
}

func topBars(s *engine.Summary) template.HTML {
	var items []bar
	for _, t := range s.TopDropped {
		items = append(items, bar{label: t.Addr.String(), value: t.Dropped, note: fmt.Sprintf(" of %d (%d SYNs)", t.Offered, t.SYNs)})
	}
	return bars(items)
}
