// enrich review pages: filter, search, sort and page the embedded rows; on a run's page, approve or reject
// them and save the decisions as JSON lines. Plain DOM, no framework; every value from the data goes into
// the page as text (textContent), never as markup.
"use strict";
(() => {
  const DATA = JSON.parse(document.getElementById("data").textContent);
  const ROWS = DATA.rows;
  const PAGE_SIZE = 200; // rows drawn at once: thousands of rows stay fast
  const LONG_TEXT = 280; // characters past which a text gets a "more" button
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (n === null || n === undefined ? "" : Number(n).toLocaleString("en-US"));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c); // strings become text nodes
    return node;
  }

  // Unsupported words, marked where they stand as words ("in" is not marked inside "inch").
  const WORD_CHAR = /[\p{L}\p{N}]/u;
  function markRanges(text, words) {
    const found = [];
    for (const w of words || []) {
      if (!w) continue;
      for (let i = text.indexOf(w); i !== -1; i = text.indexOf(w, i + 1)) {
        const before = text[i - 1], after = text[i + w.length];
        const glued = (before && WORD_CHAR.test(before) && WORD_CHAR.test(w[0])) ||
          (after && WORD_CHAR.test(after) && WORD_CHAR.test(w[w.length - 1]));
        if (!glued) found.push([i, i + w.length]);
      }
    }
    found.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
    const ranges = [];
    for (const r of found) if (!ranges.length || r[0] >= ranges[ranges.length - 1][1]) ranges.push(r);
    return ranges;
  }
  function marked(text, words) {
    const frag = document.createDocumentFragment();
    let at = 0;
    for (const [start, end] of markRanges(text, words)) {
      frag.append(text.slice(at, start), el("mark", { title: "not supported by the product's facts" }, text.slice(start, end)));
      at = end;
    }
    frag.append(text.slice(at));
    return frag;
  }
  function textBlock(text, words) {
    if (text === null || text === undefined) return el("span", { class: "none" }, "none");
    if (!text.trim()) return el("span", { class: "none" }, "(empty)");
    const body = el("div", { class: "clamp" }, marked(text, words));
    if (text.length < LONG_TEXT) return body;
    const more = el("button", { type: "button", class: "more" }, "more");
    more.addEventListener("click", () => { more.textContent = body.classList.toggle("open") ? "less" : "more"; });
    return el("div", {}, body, more);
  }
  const attrList = (attrs) => (attrs && attrs.length
    ? el("ul", { class: "attrs" }, ...attrs.map(([label, value]) => el("li", {}, el("b", {}, label + ": "), value)))
    : null);
  // Below the text too: a clamped text may hide its marks.
  const unsupportedLine = (words) => (words && words.length
    ? el("div", { class: "unsupported" }, "unsupported: ", ...words.flatMap((w, i) => [i ? ", " : "", el("mark", {}, w)]))
    : null);
  const flagBadges = (flags) => (flags || []).map((f) => el("span", { class: "flag" }, f));
  const options = (select, first, pairs) => {
    select.replaceChildren(el("option", { value: "" }, first), ...pairs.map(([value, label]) => el("option", { value }, label)));
  };

  // Search: every word of the query somewhere in the row's texts, ids or flags (case-insensitive).
  const haystacks = new Map();
  function haystack(r) {
    let h = haystacks.get(r);
    if (h === undefined) {
      h = view.searchText(r).filter((s) => s !== null && s !== undefined).join("\n").toLowerCase();
      haystacks.set(r, h);
    }
    return h;
  }

  const state = { query: [], sort: null, desc: false, page: 0 };
  let shown = [];

  function compare(key) {
    return (a, b) => {
      const x = view.sortValue(a, key), y = view.sortValue(b, key);
      if (x === y) return a.row - b.row;
      if (x === null || x === undefined) return 1; // missing values last, either way
      if (y === null || y === undefined) return -1;
      const c = typeof x === "string" ? x.localeCompare(y) : x - y;
      return state.desc ? -c : c;
    };
  }

  function render() {
    shown = ROWS.filter((r) => view.matches(r) && state.query.every((q) => haystack(r).includes(q)));
    if (state.sort) shown.sort(compare(state.sort));
    const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PAGE_SIZE;
    document.querySelector("#rows tbody").replaceChildren(...shown.slice(first, first + PAGE_SIZE).map(view.row));
    $("count").textContent = `${fmt(shown.length)} of ${fmt(ROWS.length)} rows`;
    for (const th of document.querySelectorAll("#head th[data-sort]")) {
      th.setAttribute("aria-sort", th.dataset.sort === state.sort ? (state.desc ? "descending" : "ascending") : "none");
    }
    const prev = el("button", { type: "button", id: "prev", disabled: state.page === 0 }, "‹ previous");
    const next = el("button", { type: "button", id: "next", disabled: state.page >= pages - 1 }, "next ›");
    prev.addEventListener("click", () => { state.page -= 1; render(); });
    next.addEventListener("click", () => { state.page += 1; render(); });
    const range = shown.length ? `rows ${fmt(first + 1)}–${fmt(Math.min(first + PAGE_SIZE, shown.length))} of ${fmt(shown.length)}` : "no rows match";
    $("pager").replaceChildren(prev, el("span", {}, `${range} · page ${state.page + 1} of ${pages}`), next);
    view.after();
  }

  function header() {
    const table = $("rows");
    table.prepend(el("colgroup", {}, ...view.columns.map((c) => el("col", { class: c.col || null }))));
    $("head").replaceChildren(...view.columns.map((c) => {
      if (!c.sort) return el("th", { scope: "col" }, c.label);
      const button = el("button", { type: "button", title: "sort" }, c.label);
      button.addEventListener("click", () => {
        state.desc = state.sort === c.sort ? !state.desc : Boolean(c.desc);
        state.sort = c.sort;
        render();
      });
      return el("th", { scope: "col", "data-sort": c.sort }, button);
    }));
  }

  // ---- A run's page: statuses, flags and decisions.
  function runView() {
    const decisions = loadDecisions();
    const filter = { status: "", flag: "", decision: "" };
    const decisionOf = (r) => (decisions.get(r.row) || {}).decision || "undecided";

    options($("f-status"), `any (${fmt(ROWS.length)})`, DATA.statuses.map(([s, n]) => [s, `${s} (${fmt(n)})`]));
    const unsupported = ROWS.filter((r) => r.unsupported.length).length;
    const unflagged = ROWS.filter((r) => !r.flags.length).length;
    options($("f-flag"), "any", [
      ...DATA.flags.map(([f, n]) => [f, `${f} (${fmt(n)})`]),
      ...(unsupported ? [["__unsupported", `unsupported words (${fmt(unsupported)})`]] : []),
      ["__none", `no flag (${fmt(unflagged)})`],
    ]);
    for (const name of ["status", "flag", "decision"]) {
      $(`f-${name}`).addEventListener("change", (e) => { filter[name] = e.target.value; state.page = 0; render(); });
    }

    function decide(rows, decision, note) {
      for (const r of rows) {
        const before = decisions.get(r.row) || {};
        const entry = { id: r.id, key: r.key, decision, note: note === undefined ? before.note ?? null : note };
        if (entry.decision === null && !entry.note) decisions.delete(r.row);
        else decisions.set(r.row, entry);
      }
      storeDecisions(decisions);
    }
    const bulkNote = () => $("bulk-note").value.trim() || undefined;
    $("approve-shown").addEventListener("click", () => { decide(shown, "approved", bulkNote()); render(); });
    $("reject-shown").addEventListener("click", () => { decide(shown, "rejected", bulkNote()); render(); });
    $("clear-shown").addEventListener("click", () => { decide(shown, null, null); render(); });
    $("save").addEventListener("click", () => saveDecisions(decisions));

    function decisionCell(r) {
      const current = decisions.get(r.row) || {};
      const button = (decision, label) => {
        const b = el("button", { type: "button", class: decision === "approved" ? "approve" : "reject", "aria-pressed": String(current.decision === decision) }, label);
        b.addEventListener("click", () => { decide([r], current.decision === decision ? null : decision); render(); });
        return b;
      };
      const note = el("input", { type: "text", class: "note", placeholder: "note", value: current.note || "", "aria-label": "note" });
      note.addEventListener("change", () => decide([r], (decisions.get(r.row) || {}).decision ?? null, note.value.trim() || null));
      return el("div", { class: "decide" }, button("approved", "✓ approve"), button("rejected", "✗ reject"), note);
    }

    return {
      columns: [
        { label: "#", sort: "row", col: "c-num" },
        { label: "Product", sort: "title" },
        { label: "Existing description" },
        { label: "Generated" },
        { label: "Chars", sort: "chars", desc: true, col: "c-n" },
        { label: "Tokens", sort: "tokens", desc: true, col: "c-n" },
        { label: "Status", sort: "status", col: "c-status" },
        { label: "Decision", sort: "decision", col: "c-decision" },
      ],
      matches(r) {
        if (filter.status && r.status !== filter.status) return false;
        if (filter.flag === "__unsupported" && !r.unsupported.length) return false;
        if (filter.flag === "__none" && r.flags.length) return false;
        if (filter.flag && !filter.flag.startsWith("__") && !r.flags.includes(filter.flag)) return false;
        return !filter.decision || decisionOf(r) === filter.decision;
      },
      searchText: (r) => [r.id, r.title, r.content, r.text, r.status, r.error, ...r.flags, ...r.attrs.flat()],
      sortValue(r, key) {
        if (key === "status") return DATA.statuses.findIndex(([s]) => s === r.status) * 100 + r.flags.length;
        if (key === "decision") return decisionOf(r);
        return r[key];
      },
      row(r) {
        const decision = (decisions.get(r.row) || {}).decision;
        return el("tr", { "data-row": r.row, "data-key": r.key, "data-status": r.status, class: decision || null },
          el("td", { "data-label": "row" }, el("div", { class: "rownum" }, `#${r.row}`), r.id === null ? null : el("div", { class: "id" }, r.id)),
          el("td", {}, (r.title ? el("div", { class: "title" }, r.title) : el("div", { class: "none" }, "(no title)")), attrList(r.attrs)),
          el("td", { "data-label": "existing" }, textBlock(r.content)),
          el("td", { "data-label": "generated", class: "generated" }, r.text === null && r.status === "error" ? el("span", { class: "none" }, "not generated") : textBlock(r.text, r.unsupported), unsupportedLine(r.unsupported)),
          el("td", { class: "n", "data-label": "chars" }, fmt(r.chars)),
          el("td", { class: "n", "data-label": "tokens" }, fmt(r.tokens), r.finish ? el("div", { class: "finish" }, r.finish) : null),
          el("td", {}, el("span", { class: `badge s-${r.status}` }, r.status), el("div", {}, ...flagBadges(r.flags)), r.error ? el("div", { class: "reason" }, r.error) : null),
          el("td", {}, decisionCell(r)),
        );
      },
      after() {
        const counts = { approved: 0, rejected: 0 };
        for (const d of decisions.values()) if (d.decision) counts[d.decision] += 1;
        $("decided").textContent = `${fmt(counts.approved)} approved · ${fmt(counts.rejected)} rejected`;
        $("save").disabled = counts.approved + counts.rejected === 0;
        $("approve-shown").textContent = `Approve all ${fmt(shown.length)} shown`;
        $("reject-shown").textContent = `Reject all ${fmt(shown.length)} shown`;
        for (const id of ["approve-shown", "reject-shown", "clear-shown"]) $(id).disabled = shown.length === 0;
      },
    };
  }

  // Decisions live in localStorage under the output's path, so a reload keeps them; a saved decision whose
  // row now has another content key (the output was written again) no longer applies and is dropped.
  function loadDecisions() {
    const byRow = new Map(ROWS.map((r) => [r.row, r]));
    const decisions = new Map();
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(DATA.storageKey) || "{}"); } catch (e) { saved = {}; }
    for (const [row, d] of Object.entries(saved)) {
      const r = byRow.get(Number(row));
      if (!r || r.key === d.key) decisions.set(Number(row), d);
    }
    return decisions;
  }
  function storeDecisions(decisions) {
    try { localStorage.setItem(DATA.storageKey, JSON.stringify(Object.fromEntries(decisions))); } catch (e) {
      // Storage off (some browsers, for files): the decisions last until the tab closes; saving still works.
    }
  }
  function saveDecisions(decisions) {
    const lines = [...decisions.entries()]
      .filter(([, d]) => d.decision)
      .sort((a, b) => a[0] - b[0])
      .map(([row, d]) => JSON.stringify({ id: d.id ?? null, row, key: d.key ?? null, decision: d.decision, note: d.note || null }) + "\n");
    const url = URL.createObjectURL(new Blob(lines, { type: "application/x-ndjson" }));
    const link = el("a", { href: url, download: DATA.decisionsName });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // ---- An eval's page: each model's text beside the real description; rows that differ most first.
  function evalView() {
    const roles = DATA.roles;
    const filter = { flag: "" };
    const pairs = [];
    for (const [role, name] of roles) {
      for (const flag of DATA.flags) {
        const n = ROWS.filter((r) => r.roles[role].flags.includes(flag)).length;
        if (n) pairs.push([`${role}:${flag}`, `${role} (${name}): ${flag} (${fmt(n)})`]);
      }
    }
    options($("f-flag"), "any", pairs);
    $("f-flag").addEventListener("change", (e) => { filter.flag = e.target.value; state.page = 0; render(); });
    state.sort = "diff";
    state.desc = true;
    const gen = (r, role) => {
      const g = r.roles[role];
      return el("td", { "data-label": role },
        textBlock(g.text, g.unsupported), unsupportedLine(g.unsupported), el("div", {}, ...flagBadges(g.flags)),
        el("div", { class: "score" }, `overlap ${g.score.toFixed(2)}${g.finish ? ` · ${g.finish}` : ""}`));
    };
    return {
      columns: [
        { label: "#", sort: "row", col: "c-num" },
        { label: "Product", sort: "title" },
        { label: "Real description" },
        ...roles.map(([role, name]) => ({ label: `${role}: ${name}`, sort: `score:${role}`, desc: true })),
        ...(roles.length > 1 ? [{ label: "Differ", sort: "diff", desc: true, col: "c-diff" }] : []),
      ],
      matches(r) {
        if (!filter.flag) return true;
        const [role, flag] = filter.flag.split(":");
        return r.roles[role].flags.includes(flag);
      },
      searchText: (r) => [r.id, r.title, r.reference, ...r.attrs.flat(), ...roles.flatMap(([role]) => [r.roles[role].text, ...r.roles[role].flags])],
      sortValue(r, key) {
        if (key.startsWith("score:")) return r.roles[key.slice(6)].score;
        return r[key];
      },
      row(r) {
        return el("tr", { "data-row": r.row },
          el("td", { "data-label": "row" }, el("div", { class: "rownum" }, `#${r.row}`), r.id === null ? null : el("div", { class: "id" }, r.id)),
          el("td", {}, (r.title ? el("div", { class: "title" }, r.title) : el("div", { class: "none" }, "(no title)")), attrList(r.attrs)),
          el("td", { "data-label": "real" }, textBlock(r.reference)),
          ...roles.map(([role]) => gen(r, role)),
          ...(roles.length > 1 ? [el("td", { class: "n", "data-label": "differ" }, r.diff.toFixed(2))] : []),
        );
      },
      after() {},
    };
  }

  const view = DATA.kind === "eval" ? evalView() : runView();
  let typing = 0;
  $("search").addEventListener("input", (e) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.query = e.target.value.toLowerCase().split(/\s+/).filter(Boolean);
      state.page = 0;
      render();
    }, 120);
  });
  header();
  render();
})();
