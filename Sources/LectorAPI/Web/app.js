// Lector's page: sign in with an API key, upload documents, watch the job list, open a job.
import * as api from "./api.js";
import { el, statusWord, seconds } from "./dom.js";
import { JobView } from "./viewer.js";

const $ = (selector) => document.querySelector(selector);
const message = $("#message");
const view = new JobView($("#job"));
const pageSize = 10;
const list = { cursors: [null], index: 0, next: null, timer: null, thumbnails: new Map() };

function say(text) { message.textContent = text; }

// MARK: signing in

async function signIn(key) {
  api.session.key = key;
  try {
    const { languages, default: fallback } = await api.languages();
    const select = $("#languages");
    select.replaceChildren(...languages.map((name) => {
      const option = el("option", { value: name }, name);
      option.selected = fallback.split("+").includes(name);
      return option;
    }));
  } catch (error) {
    api.session.key = null;
    say(error.status === 401 ? "That API key was not accepted." : `Could not sign in: ${error.message}`);
    return false;
  }
  say("");
  $("#sign-in").hidden = true;
  $("#signed-in").hidden = false;
  $("#app").hidden = false;
  showList();
  return true;
}

function signOut() {
  api.session.key = null;
  clearTimeout(list.timer);
  view.close();
  $("#job-list").replaceChildren();
  list.signature = null;
  $("#app").hidden = true;
  $("#signed-in").hidden = true;
  $("#sign-in").hidden = false;
  $("#api-key").value = "";
  $("#api-key").focus();
}

$("#sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await signIn($("#api-key").value.trim())) $("#api-key").value = "";
});
$("#sign-out").addEventListener("click", signOut);

// MARK: uploading

let chosen = [];

function choose(files) {
  chosen = [...files];
  $("#chosen").textContent = chosen.length === 0 ? "No files chosen."
    : `${chosen.length} file${chosen.length > 1 ? "s" : ""} chosen: ${chosen.map((file) => file.name).join(", ")}`;
}

$("#files").addEventListener("change", (event) => choose(event.target.files));
const zone = $("#drop-zone");
zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (event) => {
  event.preventDefault();
  zone.classList.remove("over");
  choose(event.dataTransfer.files);
});

function options() {
  const languages = [...$("#languages").selectedOptions].map((option) => option.value);
  const operations = [...document.querySelectorAll("input[name=operation]:checked")].map((box) => box.value);
  // hOCR and the searchable PDF are made only when a job lists them (json and txt always are).
  const formats = [...document.querySelectorAll("input[name=format]:checked")].map((box) => box.value);
  const options = { mode: $("#mode").value, operations };
  if (languages.length > 0) options.lang = languages.join("+");
  if (formats.length > 0) options.formats = ["json", "txt", ...formats];
  return options;
}

$("#upload-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (chosen.length === 0) { say("Choose or drop at least one file first."); return; }
  const files = chosen;
  choose([]);
  $("#files").value = "";
  const settings = options();
  await Promise.all(files.map(async (file) => {
    const line = el("li", {}, `${file.name}: uploading…`);
    $("#uploads").prepend(line);
    try {
      await api.submit(file, settings);
      line.textContent = `${file.name}: queued`;
    } catch (error) {
      line.textContent = `${file.name}: refused: ${error.message}`;
      line.classList.add("error");
    }
  }));
  showList(0);
});

// MARK: the job list, polled while it is shown

async function refreshList() {
  clearTimeout(list.timer);
  if (!api.session.key) return;
  try {
    const page = await api.listJobs({
      status: $("#status-filter").value, cursor: list.cursors[list.index], limit: pageSize,
    });
    renderJobs(page.jobs);
    list.next = page.nextCursor ?? null;
    $("#newer").disabled = list.index === 0;
    $("#older").disabled = !list.next;
    $("#jobs-updated").textContent = `Updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (error.status === 401) { signOut(); say("Your API key is no longer accepted."); return; }
    $("#jobs-updated").textContent = `Could not refresh: ${error.message}`;
  }
  list.timer = setTimeout(refreshList, 2000);
}

function showList(index = list.index) {
  if (index === 0) list.cursors = [null];
  list.index = index;
  refreshList();
}

$("#status-filter").addEventListener("change", () => showList(0));
$("#newer").addEventListener("click", () => showList(Math.max(0, list.index - 1)));
$("#older").addEventListener("click", () => {
  if (!list.next) return;
  list.cursors[list.index + 1] = list.next;
  showList(list.index + 1);
});

// Rebuilds the list only when something shown changed, and keeps the keyboard focus on the job it was on.
function renderJobs(jobs) {
  const signature = JSON.stringify(jobs.map((job) => [job.id, job.status, job.reason, job.startedAt, job.endedAt, job.progress]));
  if (signature === list.signature) return;
  list.signature = signature;
  const focused = document.activeElement?.closest?.("#job-list li[data-job-id]")?.dataset.jobId;
  const items = jobs.map((job) => {
    const state = el("span", { class: `status ${job.status.toLowerCase()}` }, statusWord(job.status));
    const details = [];
    const took = seconds(job.startedAt, job.endedAt);
    if (job.status === "FINISHED" && took) details.push(`took ${took}`);
    if (job.status === "FAILURE" && job.reason) details.push(job.reason);
    if (job.status === "QUEUED" && job.reason) details.push(job.reason);
    if (job.status === "IN_PROGRESS" && job.progress) {
      details.push(`page ${Math.min(job.progress.pagesDone + 1, job.progress.pagesTotal)} of ${job.progress.pagesTotal}`);
    }
    const open = el("button", { type: "button", class: "open", "aria-label": `Open ${job.document.name} (${statusWord(job.status)})` },
      job.document.name);
    open.addEventListener("click", () => openJob(job.id));
    const thumbnail = el("span", { class: "thumb", "aria-hidden": "true" });
    if (job.status === "FINISHED") showThumbnail(job.id, thumbnail);
    return el("li", { class: "job", "data-job-id": job.id, "data-status": job.status },
      thumbnail,
      el("span", { class: "job-main" }, open, el("span", { class: "muted" }, new Date(job.createdAt).toLocaleString())),
      state,
      el("span", { class: "job-detail" }, details.join(" · ")));
  });
  if (items.length === 0) items.push(el("li", { class: "muted" }, "No jobs yet."));
  $("#job-list").replaceChildren(...items);
  if (focused) document.querySelector(`#job-list li[data-job-id="${CSS.escape(focused)}"] button`)?.focus();
}

async function showThumbnail(id, holder) {
  if (!list.thumbnails.has(id)) list.thumbnails.set(id, api.pagePicture(id, 1, "thumbnail").catch(() => null));
  const url = await list.thumbnails.get(id);
  if (url) holder.replaceChildren(el("img", { src: url, alt: "" }));
}

// MARK: one job

function openJob(id) {
  $("#jobs").hidden = true;
  $("#upload").hidden = true;
  view.open(id).catch((error) => say(`Could not open the job: ${error.message}`));
  $("#back").focus();
}

$("#back").addEventListener("click", () => {
  const id = view.root.dataset.jobId;
  view.close();
  $("#jobs").hidden = false;
  $("#upload").hidden = false;
  document.querySelector(`li[data-job-id="${CSS.escape(id ?? "")}"] button`)?.focus();
});

if (api.session.key) signIn(api.session.key);
else $("#api-key").focus();
