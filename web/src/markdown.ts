// A model's answer as HTML that cannot act: Markdown rendered by marked, code highlighted by
// highlight.js, then sanitized by DOMPurify with a narrow allow-list. Whatever the answer
// holds, nothing in it runs script, submits a form, or loads anything (no images, no
// frames, no styles); links open in a new tab without the page's referrer or opener.
// The edge's Content Security Policy is the second wall (edge_proxy/envoy.yaml.tmpl).
import DOMPurify from "dompurify";
import hljs from "highlight.js/lib/common";
import { Marked } from "marked";

const marked = new Marked({
  gfm: true,
  breaks: true,
  async: false,
  renderer: {
    code({ text, lang }) {
      const language = lang && hljs.getLanguage(lang) ? lang : undefined;
      const body = language
        ? hljs.highlight(text, { language, ignoreIllegals: true }).value
        : hljs.highlightAuto(text).value;
      const label = language ? ` data-language="${language}"` : "";
      return `<pre><code class="hljs"${label}>${body}</code></pre>`;
    },
  },
});

const purify = DOMPurify(window);
purify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
    node.setAttribute("referrerpolicy", "no-referrer");
  }
});

const POLICY = {
  ALLOWED_TAGS: [
    "a", "b", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
    "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td", "th", "thead", "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "class", "data-language", "align"],
  // Links only to web and mail addresses: no javascript:, data: or vbscript: URLs.
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
  ALLOW_DATA_ATTR: false,
  KEEP_CONTENT: true,
};

/** Sanitized HTML for a Markdown text (an answer, or the user's own message). */
export function renderMarkdown(text: string): string {
  const raw = marked.parse(text) as string;
  return purify.sanitize(raw, POLICY) as unknown as string;
}
