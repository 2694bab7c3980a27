// What every section of the admin page is drawn with: the section frame, a scrolling table,
// a two-column table of a chart's numbers (for screen readers), and counts.
import { html, type TemplateResult } from "lit-html";

export const count = (value: bigint): string => value.toLocaleString();

export function section(id: string, title: string, body: TemplateResult): TemplateResult {
  return html`<section class="panel" id=${`admin-${id}`} aria-labelledby=${`admin-${id}-title`}>
    <h2 id=${`admin-${id}-title`}>${title}</h2>
    ${body}
  </section>`;
}

export function scroller(body: TemplateResult): TemplateResult {
  return html`<div class="table-scroll">${body}</div>`;
}

export function numbersTable(caption: string, head: [string, string], rows: Array<[string, string]>): TemplateResult {
  return scroller(html`<table>
    <caption class="sr-only">${caption}</caption>
    <thead>
      <tr><th scope="col">${head[0]}</th><th scope="col" class="num">${head[1]}</th></tr>
    </thead>
    <tbody>
      ${rows.map(([key, value]) => html`<tr><th scope="row">${key}</th><td class="num">${value}</td></tr>`)}
    </tbody>
  </table>`);
}
