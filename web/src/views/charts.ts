// Bar charts on <canvas> with chart.js, for the admin pages. Only the pieces a bar chart
// needs are registered, to keep the bundle small. Each chart sits in a fixed-height box
// (.chart-box) and is drawn without animation, so a screenshot right after load shows it.
//
// The app re-renders everything on every frame, so a chart must not be re-created each
// time: the canvas carries a lit-html `ref` with one stable callback per chart id. lit-html
// calls it with the canvas when the canvas is rendered and with undefined when it leaves
// the page (another route, an error state), which destroys the chart.
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from "chart.js";
import { html, type TemplateResult } from "lit-html";
import { ref } from "lit-html/directives/ref.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

export interface BarSpec {
  labels: string[];
  values: number[];
  /** The unit of the values, for the axis and tooltips ("USD", "turns"). */
  unit: string;
  /** Bars run left to right (long labels such as model names read better). */
  horizontal?: boolean;
}

interface Drawn {
  chart: Chart<"bar"> | null;
  canvas: HTMLCanvasElement | null;
  spec: BarSpec;
  /** The spec the chart shows, as JSON: a new spec with the same data changes nothing. */
  shown: string;
  attach: (element: Element | undefined) => void;
}

const drawn = new Map<string, Drawn>();

/** A colour of the stylesheet (light or dark theme), for the canvas that cannot read CSS. */
function cssColor(name: string, fallback: string): string {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function create(entry: Drawn): void {
  const canvas = entry.canvas;
  // Created after the render: lit-html calls the ref before the canvas is in the document,
  // and chart.js sizes a responsive chart from its parent.
  if (!canvas || !canvas.isConnected || entry.chart) return;
  const { spec } = entry;
  const ink = cssColor("--muted", "#5f6368");
  const grid = cssColor("--line", "#dcdcd8");
  entry.chart = new Chart(canvas, {
    type: "bar",
    data: {
      labels: spec.labels,
      datasets: [{ label: spec.unit, data: spec.values, backgroundColor: cssColor("--accent", "#2f6f5e") }],
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: spec.horizontal ? "y" : "x",
      color: ink,
      scales: {
        x: { ticks: { color: ink }, grid: { color: grid } },
        y: { ticks: { color: ink }, grid: { color: grid }, beginAtZero: true },
      },
      plugins: {
        tooltip: { callbacks: { label: (item) => `${item.formattedValue} ${spec.unit}` } },
      },
    },
  });
  entry.shown = JSON.stringify(spec);
}

function update(entry: Drawn): void {
  const next = JSON.stringify(entry.spec);
  if (!entry.chart || entry.shown === next) return;
  entry.chart.data.labels = entry.spec.labels;
  entry.chart.data.datasets[0]!.data = entry.spec.values;
  entry.chart.update();
  entry.shown = next;
}

function entryFor(id: string, spec: BarSpec): Drawn {
  let entry = drawn.get(id);
  if (!entry) {
    const fresh: Drawn = { chart: null, canvas: null, spec, shown: "", attach: () => undefined };
    fresh.attach = (element) => {
      if (element instanceof HTMLCanvasElement) {
        fresh.canvas = element;
        queueMicrotask(() => create(fresh));
      } else {
        fresh.chart?.destroy();
        fresh.chart = null;
        fresh.canvas = null;
      }
    };
    drawn.set(id, fresh);
    entry = fresh;
  }
  entry.spec = spec;
  return entry;
}

/**
 * A bar chart with an accessible name; `table` is the same numbers for screen readers (and
 * anyone who prefers them), in a <details> below the chart.
 */
export function barChart(id: string, label: string, spec: BarSpec, table: TemplateResult): TemplateResult {
  const entry = entryFor(id, spec);
  queueMicrotask(() => update(entry));
  return html`<figure class="chart">
    <figcaption>${label} <span class="muted">(${spec.unit})</span></figcaption>
    <div class="chart-box"><canvas id=${id} role="img" aria-label=${label} ${ref(entry.attach)}></canvas></div>
    <details class="chart-data">
      <summary>The numbers</summary>
      ${table}
    </details>
  </figure>`;
}

/** Micro-units as a number of currency units, for drawing only (never for sums). */
export function microsToUnits(micros: bigint): number {
  return Number(micros) / 1_000_000;
}
