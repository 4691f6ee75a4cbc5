// PACSmesh dashboard: refresh the live sections from the node every few seconds (short
// polling: works through any proxy, nothing held open), and run the search forms in place.
// The node renders and escapes every fragment; this script only swaps them in.
"use strict";

const POLL_MS = 2000;

function setStale(stale) {
  document.body.classList.toggle("stale", stale);
}

async function get(url) {
  const response = await fetch(url, {credentials: "same-origin", cache: "no-store"});
  if (!response.ok) {
    throw new Error(response.status + " " + (await response.text()));
  }
  return response;
}

async function fragment(url) {
  return (await get(url)).text();
}

async function refresh() {
  try {
    // One request, one snapshot: the sections never disagree with each other.
    const parts = await (await get("/dashboard/live")).json();
    for (const section of document.querySelectorAll("[data-live]")) {
      if (section.dataset.live in parts) {
        section.innerHTML = parts[section.dataset.live];
      }
    }
    document.getElementById("updated").textContent = new Date().toISOString()
      .replace("T", " ").replace(/\.\d+Z$/, " UTC");
    setStale(false);
  } catch (error) {
    setStale(true);  // the header turns grey: what is shown may be old
  } finally {
    window.setTimeout(refresh, POLL_MS);
  }
}

function searchInPlace(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const target = document.getElementById(form.dataset.target);
    const query = new URLSearchParams(new FormData(form)).toString();
    try {
      target.innerHTML = await fragment(form.getAttribute("action") + "?" + query);
    } catch (error) {
      target.textContent = String(error.message);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("form[data-target]").forEach(searchInPlace);
  window.setTimeout(refresh, POLL_MS);
});
