// A small Markdown subset rendered as DOM nodes built from text: fenced code, headings,
// lists, quotes, paragraphs; inline code, bold, italics and http(s) links. Nothing is
// parsed as HTML: `<img onerror=…>` in an answer stays those characters.

import { el } from "./dom.js";

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\s][^*\n]*\*|_[^_\s][^_\n]*_)|(\[[^\]\n]+\]\([^)\s]+\))/;

export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = String(text).split(/\r?\n/);
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*(```|~~~)\s*([\w+-]*)\s*$/.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1; // the closing fence
      out.append(el("pre", { class: "code" }, el("code", {}, body.join("\n"))));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2); // the page owns h1 and h2
      out.append(inline(el(`h${level}`), heading[2]));
      i += 1;
      continue;
    }
    const item = /^\s*([-*+]|\d+[.)])\s+/;
    if (item.test(line)) {
      const ordered = /\d/.test(line.trim()[0]);
      const list = el(ordered ? "ol" : "ul");
      while (i < lines.length && item.test(lines[i])) {
        list.append(inline(el("li"), lines[i].replace(item, "")));
        i += 1;
      }
      out.append(list);
      continue;
    }
    if (/^\s*>/.test(line)) {
      const quoted = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
      out.append(el("blockquote", {}, renderMarkdown(quoted.join("\n"))));
      continue;
    }
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const paragraph = [];
    while (i < lines.length && lines[i].trim() && !/^\s*(```|~~~|#{1,6}\s|>|[-*+]\s|\d+[.)]\s)/.test(lines[i])) {
      paragraph.push(lines[i++]);
    }
    if (!paragraph.length) paragraph.push(lines[i++]);
    out.append(inline(el("p"), paragraph.join("\n")));
  }
  return out;
}

function inline(node, text) {
  let rest = text;
  while (rest) {
    const match = INLINE.exec(rest);
    if (!match) {
      node.append(document.createTextNode(rest));
      break;
    }
    if (match.index) node.append(document.createTextNode(rest.slice(0, match.index)));
    const token = match[0];
    if (match[1]) node.append(el("code", {}, token.slice(1, -1)));
    else if (match[2]) node.append(inline(el("strong"), token.slice(2, -2)));
    else if (match[3]) node.append(inline(el("em"), token.slice(1, -1)));
    else node.append(link(token));
    rest = rest.slice(match.index + token.length);
  }
  return node;
}

function link(token) {
  const split = token.indexOf("](");
  const label = token.slice(1, split);
  const href = token.slice(split + 2, -1);
  let url = null;
  try {
    url = new URL(href);
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    return document.createTextNode(token);
  }
  return el("a", { href: url.href, rel: "noopener noreferrer nofollow", target: "_blank" }, label);
}
