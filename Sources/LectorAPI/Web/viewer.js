// One job: each page's preview with its words drawn over it as SVG polygons, the page's text beside it, and
// download links. Everything from the job (names, words, text) goes in through textContent or attributes,
// never as HTML.
import * as api from "./api.js";
import { el, describeJob } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const formats = [["txt", "Text"], ["json", "JSON"], ["hocr", "hOCR"], ["pdf", "Searchable PDF"]];

export class JobView {
  constructor(root) {
    this.root = root;
    this.title = root.querySelector("#job-title");
    this.status = root.querySelector("#job-status");
    this.downloads = root.querySelector("#downloads");
    this.pages = root.querySelector("#pages");
    this.wordInfo = root.querySelector("#word-info");
    this.objectURLs = [];
    this.generation = 0;
  }

  // Shows job `id`; polls it until it ends, then draws its pages.
  async open(id) {
    const generation = ++this.generation;
    this.clear();
    this.root.hidden = false;
    this.root.dataset.jobId = id;
    this.root.dataset.ready = "false";
    while (generation === this.generation) {
      const job = await api.job(id);
      if (generation !== this.generation) return;
      this.title.textContent = job.document.name;
      this.status.textContent = describeJob(job.status, job.history);
      if (job.status === "FINISHED") return this.showResult(id, generation);
      if (job.status === "FAILURE") { this.root.dataset.ready = "true"; return; }
      await new Promise((resolve) => setTimeout(resolve, 1500));
    }
  }

  close() {
    this.generation++;
    this.clear();
    this.root.hidden = true;
  }

  clear() {
    for (const url of this.objectURLs) URL.revokeObjectURL(url);
    this.objectURLs = [];
    this.downloads.replaceChildren();
    this.pages.replaceChildren();
    this.title.textContent = "Job";
    this.status.textContent = "";
    this.wordInfo.textContent = "Hover over or focus a word to see it and its confidence.";
  }

  async showResult(id, generation) {
    const [result, links] = await Promise.all([
      api.json(`/v1/jobs/${encodeURIComponent(id)}/result?format=json`),
      Promise.all(formats.map(([format]) => api.resultLink(id, format))),
    ]);
    if (generation !== this.generation) return;
    formats.forEach(([format, label], index) => {
      const link = links[index];
      this.downloads.append(el("li", {}, link
        ? el("a", { href: link, download: `result.${format}`, "data-format": format }, label)
        : el("span", { class: "muted" }, `${label}: not available for this job`)));
    });
    for (const page of result.pages) {
      const picture = await api.pagePicture(id, page.number, "preview");
      if (generation !== this.generation) { if (picture) URL.revokeObjectURL(picture); return; }
      if (picture) this.objectURLs.push(picture);
      this.pages.append(this.pageFigure(page, picture, result.pages.length));
    }
    this.root.dataset.ready = "true";
  }

  // The page picture with an SVG over it whose viewBox is the page's own pixels: the browser scales every
  // box exactly as it scales the picture.
  pageFigure(page, picture, pageCount) {
    const label = pageCount > 1 ? `Page ${page.number}` : "Page";
    const stage = el("div", { class: "stage" });
    if (picture) {
      stage.append(el("img", { src: picture, alt: `${label} as read (${page.width} × ${page.height} pixels)` }));
    } else {
      // CSSOM, not a style attribute: the Content-Security-Policy allows no inline styles.
      const blank = el("div", { class: "no-picture" }, "No picture of this page");
      blank.style.aspectRatio = `${Math.max(1, page.width)} / ${Math.max(1, page.height)}`;
      stage.append(blank);
    }
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${page.width} ${page.height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("class", "boxes");
    svg.setAttribute("role", "group");
    svg.setAttribute("aria-label", `${label}: recognised words`);
    for (const [lineIndex, line] of page.lines.entries()) {
      for (const [wordIndex, word] of line.words.entries()) {
        svg.append(this.wordShape(word, page.number, lineIndex, wordIndex));
      }
    }
    stage.append(svg);
    const text = el("pre", { class: "page-text", tabindex: "0", "aria-label": `${label}: text` });
    text.textContent = page.text;
    return el("figure", { class: "page", "data-page": String(page.number), "data-width": String(page.width), "data-height": String(page.height) },
      el("figcaption", {}, `${label} · ${page.mode ?? "document"} pipeline`),
      el("div", { class: "page-body" }, stage, text));
  }

  wordShape(word, pageNumber, lineIndex, wordIndex) {
    const polygon = document.createElementNS(SVG, "polygon");
    polygon.setAttribute("points", word.polygon.map(([x, y]) => `${x},${y}`).join(" "));
    const confidence = Math.round(word.confidence);
    polygon.setAttribute("class", confidence < 60 ? "word doubtful" : "word");
    polygon.setAttribute("tabindex", "0");
    polygon.setAttribute("role", "img");
    polygon.setAttribute("aria-label", `${word.text}, confidence ${confidence}%`);
    polygon.dataset.page = String(pageNumber);
    polygon.dataset.line = String(lineIndex);
    polygon.dataset.word = String(wordIndex);
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${word.text} (${confidence}%)`;
    polygon.append(title);
    const show = () => { this.wordInfo.textContent = `“${word.text}”: confidence ${confidence}%`; };
    polygon.addEventListener("mouseenter", show);
    polygon.addEventListener("focus", show);
    return polygon;
  }
}
