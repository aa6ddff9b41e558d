// Small helpers to build elements without HTML strings.

// el("a", {href: "…"}, "text", child, …): attributes are set with setAttribute, text goes in as text nodes.
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

const words = { QUEUED: "queued", IN_PROGRESS: "in progress", FINISHED: "finished", FAILURE: "failed" };

export const statusWord = (status) => words[status] ?? status;

export function seconds(from, to) {
  if (!from || !to) return null;
  const value = (new Date(to) - new Date(from)) / 1000;
  return value < 10 ? `${value.toFixed(1)} s` : `${Math.round(value)} s`;
}

// "finished in 2.1 s", "failed: reason", "queued" — from a job's history.
export function describeJob(status, history = []) {
  const started = [...history].reverse().find((step) => step.status === "IN_PROGRESS");
  const last = history[history.length - 1];
  if (status === "FINISHED") return `Finished in ${seconds(started?.at, last?.at) ?? "?"}.`;
  if (status === "FAILURE") return `Failed: ${last?.reason ?? "no reason recorded"}`;
  if (status === "IN_PROGRESS") return "Being read…";
  return "Queued…";
}
