// SvgDiffusion studio: talks to the server's own JSON API (nothing else is loaded or contacted).
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const state = { model: null, running: null, picked: null, results: 0, last: null };

/** Results shown at most this many times their pixels (bounded further by the panel; see studio.css). */
const RESULT_SCALE = 3;
const GALLERY_KEY = 'svgd-studio-gallery';
const GALLERY_MAX = 24;
/** Results with more images than this show their tiles folded. */
const TILES_OPEN = 24;

function setStatus(text, kind = '') {
  const s = $('#status');
  s.textContent = text;
  s.className = kind;
}

function pngUrl(b64) { return 'data:image/png;base64,' + b64; }

function b64ToBlob(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: 'image/png' });
}

// ---- the model -------------------------------------------------------------------------------

async function loadModel() {
  const res = await fetch('/api/model');
  if (!res.ok) throw new Error('GET /api/model: ' + res.status);
  applyModel(await res.json());
  await loadModelList();
  setStatus('ready');
}

/** The page for model m (GET /api/model): its description, classes, defaults and limits. */
function applyModel(m) {
  state.model = m;
  $('#model-info').textContent =
    `${m.name}: ${m.classes.length} classes, ${m.image_size}×${m.image_size} images, latent ${m.latent.grid}×${m.latent.grid}×${m.latent.channels} ` +
    `(${m.latent.semantic} ${m.latent.frozen_encoder} + ${m.latent.residual} residual channels), DiT ${m.dit.depth}×${m.dit.hidden_size}, ${m.precision}`;
  const picker = $('#class-picker');
  picker.replaceChildren();
  m.classes.forEach((name, i) => {
    const label = document.createElement('label');
    label.className = 'chip';
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.value = name;
    box.dataset.index = i;
    label.append(box, ' ' + name);
    picker.append(label);
  });
  for (const sel of $$('.class-select')) {
    while (sel.options.length > 1) sel.remove(1);
    m.classes.forEach((name) => sel.add(new Option(name, name)));
  }
  // The page's defaults and limits are the server's (GET /api/model), so the page and the CLI agree.
  const d = m.defaults;
  for (const el of $$('input[name=n]')) el.max = m.limits.n;
  for (const el of $$('input[name=steps]')) { el.max = m.limits.steps; el.value = d.steps; }
  for (const el of $$('input[name=frames]')) { el.max = m.limits.frames; el.value = Math.min(d.frames, m.limits.frames); }
  for (const el of $$('input[name=cfg]')) el.value = d.cfg;
  for (const el of $$('input[name=seed]')) el.value = d.seed;
  const g = $('#form-generate');
  $('[name=n]', g).value = Math.min(d.n, m.limits.n);
  $('[name=guidance]', g).value = d.guidance;
  $('[name=sampler]', g).value = d.sampler;
  $('[name=shift]', g).value = d.shift;
  const strength = $('#form-vary input[name=strength]');
  strength.value = d.strength;
  strength.nextElementSibling.value = strength.value;
  $('#form-vary [name=n]').value = Math.min(4, m.limits.n);
  const recolor = $('#form-recolor input[name=strength]');
  recolor.value = d.recolor_strength;
  recolor.nextElementSibling.value = recolor.value;
  updateCount();
}

/** The model picker (GET /api/models): shown when there is another bundled model to switch to. */
async function loadModelList() {
  const res = await fetch('/api/models');
  if (!res.ok) throw new Error('GET /api/models: ' + res.status);
  const list = await res.json();
  const names = list.bundled.includes(list.current) ? list.bundled : [list.current, ...list.bundled];
  const sel = $('#model-select');
  sel.replaceChildren(...names.map((n) => {
    const o = new Option(n, n);
    // A model started from a file or folder is listed so the picker shows it, but cannot be chosen again.
    o.disabled = !list.bundled.includes(n);
    return o;
  }));
  sel.value = list.current;
  $('#model-picker').hidden = names.length < 2;
}

/** Asks the server to serve another bundled model (queued behind running work), then redraws the page for it. */
async function switchModel(name) {
  const sel = $('#model-select');
  sel.disabled = true;
  $$('.go').forEach((b) => { b.disabled = true; });
  setStatus(`loading the model ${name}…`);
  try {
    const res = await fetch('/api/model', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name }) });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      setStatus(body.error || `${res.status} ${res.statusText}`, 'error');
      sel.value = state.model ? state.model.name : sel.value;
      return;
    }
    applyModel(body);
    await loadModelList();
    setStatus(`now serving ${body.name}`, 'done');
  } catch (e) {
    setStatus(String(e), 'error');
  } finally {
    sel.disabled = false;
    if (!state.running) $$('.go').forEach((b) => { b.disabled = false; });
  }
}

// The generate form's count: n in total with no class picked, n per class otherwise; never over the server's limit.
function pickedClasses() { return $$('#class-picker input:checked').map((b) => b.value); }

function updateCount() {
  const k = pickedClasses().length;
  const nInput = $('#form-generate [name=n]');
  const limit = state.model ? state.model.limits.n : Infinity;
  const most = Math.max(1, Math.floor(limit / Math.max(1, k)));
  nInput.max = most;
  if (Number(nInput.value) > most) nInput.value = most;
  const n = Number(nInput.value) || 0;
  $('#n-label').textContent = k ? 'per class' : 'images (random classes)';
  $('#classes-hint').textContent = k
    ? `${k} class${k > 1 ? 'es' : ''} picked: one row of ${n} per class.`
    : `No class picked: ${n} image${n === 1 ? '' : 's'} of random classes.`;
  $('#n-hint').textContent = `${k ? k * n : n} image${(k ? k * n : n) === 1 ? '' : 's'}` +
    (Number.isFinite(limit) ? ` (this server makes at most ${limit} per request${k ? `: up to ${most} per class with ${k} picked` : ''})` : '');
}

/** Refusals about this server's limits, in the page's words (the API's own text names CLI options). */
function pageMessage(msg) {
  if (/this server's limit/.test(msg) && state.model) {
    const l = state.model.limits;
    const what = /steps/.test(msg) ? `${l.steps} steps` : `${l.n} images`;
    return msg.replace(/ \(this server's limit[^)]*\)/, '') + ` — this server makes at most ${what} per request: ask for fewer`;
  }
  return msg;
}

// ---- requests with live progress (server-sent events over a POST) ---------------------------------

async function run(endpoint, body, label, inputs = []) {
  if (state.running) state.running.abort();
  const ctrl = new AbortController();
  state.running = ctrl;
  const bar = $('#progress');
  bar.value = 0;
  $('#cancel').disabled = false;
  $$('.go').forEach((b) => { b.disabled = true; });
  setStatus('sending…');
  const eta = { start: 0, done: 0 };
  const headers = { Accept: 'text/event-stream' };
  let payload = body;
  if (!(body instanceof FormData)) {
    headers['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  try {
    const res = await fetch(endpoint, { method: 'POST', body: payload, headers, signal: ctrl.signal });
    if (!res.ok) {
      let msg = res.status + ' ' + res.statusText;
      try { msg = pageMessage((await res.json()).error || msg); } catch (e) { /* not JSON */ }
      if (res.status === 429) msg += ` (Retry-After: ${res.headers.get('Retry-After')} s)`;
      setStatus(msg, 'error');
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = 'message';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        const obj = data ? JSON.parse(data) : {};
        if (event === 'queued') setStatus(obj.ahead > 0 ? `queued: ${obj.ahead} ahead` : 'starting…');
        else if (event === 'progress') {
          bar.max = obj.total;
          bar.value = obj.done;
          setStatus(progressText(obj.done, obj.total, eta));
        } else if (event === 'result') {
          bar.value = bar.max;
          show(obj, label, 0, inputs);
          setStatus(`done in ${obj.seconds.toFixed(2)} s`, 'done');
        } else if (event === 'error') setStatus(pageMessage(obj.error), 'error');
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') setStatus('cancelled');
    else setStatus(String(e), 'error');
  } finally {
    if (state.running === ctrl) state.running = null;
    $('#cancel').disabled = true;
    $$('.go').forEach((b) => { b.disabled = false; });
  }
}

/** "working: 40 % · about 12 s left": the rate measured since the first progress event (queueing and loading excluded). */
function progressText(done, total, eta) {
  const now = performance.now();
  if (!eta.start || done < eta.done) { eta.start = now; eta.from = done; }
  eta.done = done;
  const pct = Math.floor((100 * done) / total);
  const rate = (done - eta.from) / ((now - eta.start) / 1000);
  if (!(rate > 0) || done >= total) return `working: ${pct} %`;
  const left = (total - done) / rate;
  return `working: ${pct} % · about ${left < 60 ? Math.max(1, Math.round(left)) + ' s' : Math.round(left / 60) + ' min'} left`;
}

// ---- results and gallery ----------------------------------------------------------------------

function describe(settings) {
  return Object.entries(settings)
    .filter(([k]) => k !== 'labels' && k !== 'model')
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(',') : v}`)
    .join(' · ');
}

/** The width an image is shown at: RESULT_SCALE times its pixels, never wider than the panel nor taller than --max-result. */
function boundedWidth(img, w, h) {
  img.style.width = `min(${w * RESULT_SCALE}px, 100%, calc(var(--max-result) * ${w / h}))`;
}

function sized(img) {
  const set = () => boundedWidth(img, img.naturalWidth, img.naturalHeight);
  if (img.complete && img.naturalWidth) set(); else img.addEventListener('load', set, { once: true });
}

const single = { mix: 'mix', reconstruct: 'reconstruction', recolor: 'edit' };

function show(result, label, id = 0, inputs = []) {
  const fresh = id === 0;
  if (fresh) id = ++state.results;
  state.last = { result, label, id, inputs };
  const box = $('#result');
  box.className = '';
  box.replaceChildren();
  const one = result.images.length === 1;
  const title = document.createElement('h2');
  title.textContent = `#${id} ${label}`;
  const grid = document.createElement('img');
  grid.className = 'grid';
  grid.alt = one ? `${label} result image` : `${label} result grid`;
  grid.src = pngUrl(result.grid);
  if (!one) sized(grid);
  const meta = document.createElement('p');
  meta.className = 'hint';
  meta.textContent = describe(result.settings);
  const download = document.createElement('a');
  download.href = grid.src;
  download.download = `svgd-${id}-${label}.png`;
  download.textContent = one ? 'download PNG' : 'download grid PNG';
  download.className = 'download';
  const actions = document.createElement('div');
  actions.className = 'actions';
  box.append(title);
  if (one) {
    // One image (mix, reconstruct): shown beside what went in, all at the same size, and picked by clicking.
    // The same size as the inputs beside it: RESULT_SCALE times the model's image size, never wider than the panel.
    grid.style.width = `${(state.model ? state.model.image_size : 32) * RESULT_SCALE}px`;
    grid.title = 'click to pick this image; double-click to enlarge';
    grid.addEventListener('click', () => pick(grid, result.images[0].png, id));
    grid.addEventListener('dblclick', () => zoom(grid.src));
    const row = document.createElement('div');
    row.className = 'compare';
    for (const inp of inputs) {
      const fig = document.createElement('figure');
      const img = document.createElement('img');
      img.className = 'input';
      img.src = inp.url;
      img.alt = inp.title;
      const side = state.model ? state.model.image_size * RESULT_SCALE : 96;
      img.style.width = img.style.height = side + 'px';
      const cap = document.createElement('figcaption');
      cap.textContent = inp.title;
      fig.append(img, cap);
      row.append(fig);
    }
    const fig = document.createElement('figure');
    const cap = document.createElement('figcaption');
    cap.textContent = single[label] || 'image';
    fig.append(grid, cap);
    row.append(fig);
    box.append(row);
    if (typeof result.settings.psnr_db === 'number') {
      const psnr = document.createElement('p');
      psnr.className = 'psnr';
      psnr.textContent = `PSNR ${result.settings.psnr_db.toFixed(2)} dB (against the original resized and centre-cropped to ${state.model ? state.model.image_size + ' px' : 'the model size'})`;
      box.append(psnr);
    }
    box.append(download, meta, actions);
  } else {
    grid.title = 'double-click to enlarge';
    grid.addEventListener('dblclick', () => zoom(grid.src));
    const tiles = document.createElement('div');
    tiles.className = 'tiles';
    result.images.forEach((im, i) => {
      const fig = document.createElement('figure');
      const img = document.createElement('img');
      img.src = pngUrl(im.png);
      const name = im.class || (label.startsWith('interpolate') ? `frame ${i + 1}` : `image ${i + 1}`);
      img.alt = im.class ? `sample ${i} (${im.class})` : name;
      img.title = 'click to pick this image for the edit tabs; double-click to enlarge';
      img.addEventListener('click', () => pick(img, im.png, id));
      img.addEventListener('dblclick', () => zoom(img.src));
      const a = document.createElement('a');
      a.href = img.src;
      a.download = `svgd-${id}-${i}${im.class ? '-' + im.class : ''}.png`;
      a.textContent = name;
      fig.append(img, a);
      tiles.append(fig);
    });
    // Many images: the tiles are folded away so the gallery stays in sight (the grid shows them all).
    const fold = document.createElement('details');
    fold.className = 'tiles-fold';
    fold.open = result.images.length <= TILES_OPEN;
    const summary = document.createElement('summary');
    summary.textContent = `${result.images.length} images, one by one (to pick or download)`;
    fold.append(summary, tiles);
    // Every image as its own PNG, in one click (the browser may ask once to allow several downloads).
    const all = document.createElement('button');
    all.type = 'button';
    all.className = 'download-all';
    all.textContent = `download all ${result.images.length} PNGs`;
    // Spaced out: Chromium drops clicks past about ten downloads started at once.
    all.addEventListener('click', () => tiles.querySelectorAll('a[download]').forEach((a, i) => setTimeout(() => a.click(), 150 * i)));
    box.append(grid, download, all, meta, actions, fold);
  }
  fillActions(actions, grid.src);
  if (!fresh) return;
  addToGallery({ result, label, id, inputs });
  saveGallery();
  // The inputs go into the saved gallery as small data URLs once they are made (a blob: URL does not survive a reload).
  if (inputs.some((i) => i.small && typeof i.small.then === 'function')) {
    Promise.all(inputs.map((i) => i.small)).then((smalls) => {
      inputs.forEach((inp, k) => { inp.small = smalls[k]; });
      saveGallery();
    });
  }
}

/** "send to …" for the picked image (any result's image, once clicked), and enlarge. */
function fillActions(actions, gridUrl) {
  const targets = [
    ['Vary', 'vary', 'image'], ['Recolour: source', 'recolor', 'image'], ['Recolour: colours like', 'recolor', 'like'], ['Mix: semantic', 'mix', 'semantic'], ['Mix: detail', 'mix', 'detail'],
    ['Interpolate: from', 'interpolate', 'a'], ['Interpolate: to', 'interpolate', 'b'], ['Reconstruct', 'reconstruct', 'image'],
  ];
  const label = document.createElement('span');
  label.textContent = 'send picked image to';
  actions.append(label);
  for (const [text, tab, field] of targets) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = 'send';
    b.dataset.tab = tab;
    b.dataset.field = field;
    b.textContent = text;
    b.disabled = !state.picked;
    b.addEventListener('click', () => sendPicked(tab, field));
    actions.append(b);
  }
  const z = document.createElement('button');
  z.type = 'button';
  z.className = 'enlarge';
  z.textContent = 'enlarge';
  z.addEventListener('click', () => zoom(gridUrl));
  actions.append(z);
}

function sendPicked(tab, field) {
  if (!state.picked) return;
  const slot = $(`#form-${tab} .slot[data-field="${field}"]`);
  slot.setImage(state.picked.blob, state.picked.url, state.picked.name);
  showTab(tab);
  if (tab === 'interpolate') {
    $('#form-interpolate input[value=images]').checked = true;
    setInterpolateMode(false);
  }
  setStatus(`the picked image is in ${tab}'s "${slot.dataset.title || 'image'}" slot`);
}

/** The enlarged view: the image scaled up (pixelated) to fit the window, bounded by it. */
function zoom(url) {
  const dlg = $('#zoom');
  const img = $('img', dlg);
  img.src = url;
  const fit = () => {
    const w = img.naturalWidth;
    const h = img.naturalHeight;
    const s = Math.max(1, Math.min(16, (0.9 * innerWidth) / w, (0.82 * innerHeight) / h));
    img.style.width = Math.floor(w * s) + 'px';
  };
  if (img.complete && img.naturalWidth) fit(); else img.addEventListener('load', fit, { once: true });
  if (!dlg.open) dlg.showModal();
}

// ---- the gallery, kept in localStorage (bounded: the last GALLERY_MAX results, fewer if the browser's quota is hit)

function addToGallery(entryData, append = false) {
  const { result, label, id } = entryData;
  const entry = document.createElement('figure');
  entry.className = 'entry';
  entry.data = entryData;
  const thumb = document.createElement('img');
  thumb.src = pngUrl(result.grid);
  thumb.alt = `gallery #${id}`;
  thumb.addEventListener('click', () => show(result, label, id, entryData.inputs || []));
  const cap = document.createElement('figcaption');
  const a = document.createElement('a');
  a.href = thumb.src;
  a.download = `svgd-${id}-${label}.png`;
  a.textContent = `#${id} ${label}`;
  cap.append(a);
  entry.append(thumb, cap);
  if (append) $('#gallery').append(entry); else $('#gallery').prepend(entry);
  while ($$('#gallery .entry').length > GALLERY_MAX) $('#gallery').lastElementChild.remove();
}

function saveGallery() {
  const saved = (inputs) => (inputs || [])
    .filter((i) => typeof i.small === 'string')
    .map((i) => ({ title: i.title, url: i.small }));
  let items = $$('#gallery .entry').map((e) => ({ result: e.data.result, label: e.data.label, id: e.data.id, inputs: saved(e.data.inputs) }));
  for (;;) {
    try {
      if (items.length) localStorage.setItem(GALLERY_KEY, JSON.stringify({ next: state.results, items }));
      else localStorage.removeItem(GALLERY_KEY);
      return;
    } catch (e) {
      if (!items.length) return;
      items = items.slice(0, -1);
    }
  }
}

function loadGallery() {
  let saved;
  try { saved = JSON.parse(localStorage.getItem(GALLERY_KEY) || 'null'); } catch (e) { saved = null; }
  if (!saved || !Array.isArray(saved.items)) return;
  state.results = Number(saved.next) || 0;
  for (const it of saved.items.slice(0, GALLERY_MAX)) {
    if (it && it.result && typeof it.result.grid === 'string' && Array.isArray(it.result.images)) {
      const inputs = (Array.isArray(it.inputs) ? it.inputs : [])
        .filter((i) => i && typeof i.title === 'string' && typeof i.url === 'string' && i.url.startsWith('data:image/'))
        .map((i) => ({ title: i.title, url: i.url, small: i.url }));
      addToGallery({ result: it.result, label: String(it.label), id: Number(it.id), inputs }, true);
    }
  }
}

function pick(img, b64, id) {
  $$('.picked').forEach((x) => x.classList.remove('picked'));
  img.classList.add('picked');
  state.picked = { blob: b64ToBlob(b64), url: img.src, name: id ? `result #${id}` : 'picked image' };
  $$('.use-picked, .actions .send').forEach((b) => { b.disabled = false; });
  setStatus('picked an image: "send picked image to" or a slot\'s "use picked image" puts it into an edit slot');
}

// ---- upload slots ------------------------------------------------------------------------------

function makeSlots() {
  for (const slot of $$('.slot')) {
    const fig = $('#slot-template').content.firstElementChild.cloneNode(true);
    $('figcaption', fig).textContent = slot.dataset.title || 'image';
    const img = $('img', fig);
    const input = $('input', fig);
    const name = $('.file-name', fig);
    // The slot names its image (the native input, and its "No file chosen", stays hidden): a file's name, "pasted image", "result #3".
    const setBlob = (blob, url, what) => {
      slot.blob = blob;
      slot.url = url;
      slot.small = smallDataUrl(blob);
      img.src = url;
      img.hidden = false;
      name.textContent = what || 'image';
      name.title = name.textContent;
      slot.classList.add('filled');
      if (what && !what.startsWith('file: ')) input.value = '';
    };
    slot.setImage = setBlob;
    slot.clear = () => {
      slot.blob = null;
      slot.url = null;
      img.hidden = true;
      img.removeAttribute('src');
      slot.small = null;
      input.value = '';
      name.textContent = 'no image yet';
      name.title = '';
      slot.classList.remove('filled');
    };
    $('.choose', fig).addEventListener('click', () => input.click());
    input.addEventListener('change', () => {
      const f = input.files[0];
      if (f) setBlob(f, URL.createObjectURL(f), 'file: ' + f.name);
    });
    // Drag and drop: an image file from the desktop, or an image dragged from this page (its URL).
    slot.addEventListener('dragover', (ev) => { ev.preventDefault(); slot.classList.add('dragover'); });
    slot.addEventListener('dragleave', () => slot.classList.remove('dragover'));
    slot.addEventListener('drop', async (ev) => {
      ev.preventDefault();
      slot.classList.remove('dragover');
      const blob = await imageFrom(ev.dataTransfer);
      if (blob) { setBlob(blob, URL.createObjectURL(blob), 'dropped: ' + (blob.name || 'image')); setStatus(`dropped an image into "${slot.dataset.title || 'image'}"`); }
      else setStatus('that was not an image', 'error');
    });
    slot.addEventListener('pointerenter', () => { state.hoverSlot = slot; });
    slot.addEventListener('pointerleave', () => { if (state.hoverSlot === slot) state.hoverSlot = null; });
    $('.use-picked', fig).addEventListener('click', () => {
      if (state.picked) setBlob(state.picked.blob, state.picked.url, state.picked.name);
    });
    slot.append(fig);
  }
}

/** The image in a drop or paste: a file, or a data:/same-origin URL dragged from the page. */
async function imageFrom(dt) {
  if (!dt) return null;
  const file = Array.from(dt.files || []).find((f) => f.type.startsWith('image/'));
  if (file) return file;
  for (const item of Array.from(dt.items || [])) {
    if (item.kind === 'file' && item.type.startsWith('image/')) return item.getAsFile();
  }
  const url = dt.getData('text/uri-list') || dt.getData('text/plain');
  if (url && (url.startsWith('data:image/') || url.startsWith(location.origin + '/') || url.startsWith('blob:'))) {
    try { const b = await (await fetch(url)).blob(); return b.type.startsWith('image/') ? b : null; } catch (e) { return null; }
  }
  return null;
}

/** Paste (Ctrl+V) puts an image into the slot under the pointer, or the first empty slot of the open tab, or its first. */
async function onPaste(ev) {
  const blob = await imageFrom(ev.clipboardData);
  if (!blob) return;
  const panel = $$('.panel').find((p) => !p.hidden);
  const slots = $$('.slot', panel).filter((x) => x.offsetParent !== null);
  const slot = (state.hoverSlot && slots.includes(state.hoverSlot) && state.hoverSlot) || slots.find((x) => !x.blob) || slots[0];
  if (!slot) { setStatus('pasting an image needs a tab with an image slot (Vary, Recolour, Mix, Interpolate, Reconstruct)', 'error'); return; }
  ev.preventDefault();
  slot.setImage(blob, URL.createObjectURL(blob), 'pasted image');
  setStatus(`pasted an image into "${slot.dataset.title || 'image'}"`);
}

function slotFile(form, field) {
  const slot = $(`.slot[data-field="${field}"]`, form);
  if (!slot.blob) throw new Error(`choose an image for "${slot.dataset.title || field}"`);
  return slot.blob;
}

/** What went into a one-image result, to show beside it: [{ title, url }]. */
function slotInputs(form, fields) {
  return fields.map(([field, title]) => {
    const slot = $(`.slot[data-field="${field}"]`, form);
    return { title, url: slot.url, small: slot.small };
  });
}

/** The image as a small PNG data URL (at most 96 px a side) for the gallery in localStorage; a promise, null if unreadable. */
async function smallDataUrl(blob) {
  try {
    const bmp = await createImageBitmap(blob);
    const s = Math.min(1, 96 / Math.max(bmp.width, bmp.height));
    const c = document.createElement('canvas');
    c.width = Math.max(1, Math.round(bmp.width * s));
    c.height = Math.max(1, Math.round(bmp.height * s));
    c.getContext('2d').drawImage(bmp, 0, 0, c.width, c.height);
    bmp.close();
    return c.toDataURL('image/png');
  } catch (e) { return null; }
}

// ---- the forms ---------------------------------------------------------------------------------

const num = (form, name) => Number($(`[name="${name}"]`, form).value);
const str = (form, name) => $(`[name="${name}"]`, form).value;

const builders = {
  generate(form) {
    const classes = pickedClasses();
    const total = num(form, 'n') * Math.max(1, classes.length);
    if (state.model && total > state.model.limits.n) {
      throw new Error(`${total} images is more than this server makes at once (${state.model.limits.n}): ask for fewer per class or fewer classes`);
    }
    const body = {
      n: num(form, 'n'), steps: num(form, 'steps'), cfg: num(form, 'cfg'), guidance: str(form, 'guidance'),
      sampler: str(form, 'sampler'), shift: num(form, 'shift'), seed: num(form, 'seed'),
    };
    if (classes.length) body.classes = classes;
    return [body, classes.length ? classes.join(',') : 'random'];
  },
  vary(form) {
    const fd = new FormData();
    fd.append('image', slotFile(form, 'image'), 'image.png');
    for (const k of ['strength', 'n', 'steps', 'cfg', 'seed']) fd.append(k, str(form, k));
    if (str(form, 'class')) fd.append('class', str(form, 'class'));
    return [fd, 'vary'];
  },
  recolor(form) {
    const fd = new FormData();
    fd.append('image', slotFile(form, 'image'), 'image.png');
    const like = $('.slot[data-field="like"]', form).blob;
    if (like) fd.append('like', like, 'like.png');
    if (!like && !str(form, 'class')) throw new Error('give a reference image ("colours like") or pick a class');
    for (const k of ['strength', 'n', 'steps', 'cfg', 'seed']) fd.append(k, str(form, k));
    if (str(form, 'class')) fd.append('class', str(form, 'class'));
    const inputs = like ? [['image', 'source'], ['like', 'colours like']] : [['image', 'source']];
    return [fd, 'recolor', slotInputs(form, inputs)];
  },
  mix(form) {
    const fd = new FormData();
    fd.append('semantic', slotFile(form, 'semantic'), 'semantic.png');
    fd.append('detail', slotFile(form, 'detail'), 'detail.png');
    return [fd, 'mix', slotInputs(form, [['semantic', 'semantic from'], ['detail', 'detail from']])];
  },
  interpolate(form) {
    const mode = $('input[name=mode]:checked', form).value;
    if (mode === 'seeds') {
      const body = { seeds: [num(form, 'seed-a'), num(form, 'seed-b')], frames: num(form, 'frames'), steps: num(form, 'steps') };
      if (str(form, 'class')) body.class = str(form, 'class');
      return [body, 'interpolate-seeds'];
    }
    const fd = new FormData();
    fd.append('a', slotFile(form, 'a'), 'a.png');
    fd.append('b', slotFile(form, 'b'), 'b.png');
    fd.append('frames', str(form, 'frames'));
    return [fd, 'interpolate'];
  },
  reconstruct(form) {
    const fd = new FormData();
    fd.append('image', slotFile(form, 'image'), 'image.png');
    return [fd, 'reconstruct', slotInputs(form, [['image', 'original']])];
  },
};

// ---- the current request as a command -------------------------------------------------------------

/** Quoted for a POSIX shell when it needs to be. */
function sh(x) {
  const v = String(x);
  return /^[\w@%+=:,./-]+$/.test(v) ? v : `'${v.replace(/'/g, `'\\''`)}'`;
}

function fileName(field) { return `${field}.png`; }

/** The open tab's request as an `svgd` command line (the CLI's options have the API's field names). */
function cliCommand(kind, form) {
  const out = ['./svgd'];
  const opt = (name, value) => { if (value !== '' && value !== undefined) out.push(`--${name}`, sh(value)); };
  if (kind === 'generate') {
    const classes = pickedClasses();
    out.push('sample');
    if (classes.length) opt('classes', classes.join(','));
    for (const k of ['n', 'steps', 'cfg', 'guidance', 'sampler', 'shift', 'seed']) opt(k, str(form, k));
    opt('out', 'grid.png');
  } else if (kind === 'vary') {
    out.push('vary', fileName('image'));
    for (const k of ['strength', 'class', 'n', 'steps', 'cfg', 'seed']) opt(k, str(form, k));
    opt('out', 'vary.png');
  } else if (kind === 'recolor') {
    out.push('recolor', fileName('image'));
    if ($('.slot[data-field="like"]', form).blob) opt('like', fileName('like'));
    for (const k of ['class', 'strength', 'n', 'steps', 'cfg', 'seed']) opt(k, str(form, k));
    opt('out', 'recolor.png');
  } else if (kind === 'mix') {
    out.push('mix');
    opt('semantic', fileName('semantic'));
    opt('detail', fileName('detail'));
    opt('out', 'mix.png');
  } else if (kind === 'interpolate') {
    out.push('interpolate');
    if ($('input[name=mode]:checked', form).value === 'seeds') {
      opt('seeds', `${str(form, 'seed-a')},${str(form, 'seed-b')}`);
      opt('class', str(form, 'class'));
      opt('steps', str(form, 'steps'));
    } else out.push(fileName('a'), fileName('b'));
    opt('frames', str(form, 'frames'));
    opt('out', 'strip.png');
  } else {
    out.push('reconstruct', fileName('image'));
    opt('out', 'reconstruct');
  }
  return out.join(' ');
}

/** The open tab's request as curl against this server (the PNG answer: Accept: image/png). */
function curlCommand(kind, form) {
  const url = location.origin + form.dataset.endpoint;
  let body;
  try { [body] = builders[kind](form); } catch (e) { body = null; }
  const out = ['curl', '-s', sh(url)];
  if (body instanceof FormData || body === null) {
    const fields = { vary: ['image'], recolor: body && body.has('like') ? ['image', 'like'] : ['image'], mix: ['semantic', 'detail'], interpolate: ['a', 'b'], reconstruct: ['image'] }[kind] || [];
    for (const f of fields) out.push('-F', sh(`${f}=@${fileName(f)}`));
    if (body) for (const [k, v] of body.entries()) if (typeof v === 'string') out.push('-F', sh(`${k}=${v}`));
  } else out.push('-H', sh('Content-Type: application/json'), '-d', sh(JSON.stringify(body)));
  out.push('-H', sh('Accept: image/png'), '-o', 'result.png');
  return out.join(' ');
}

async function copyCommand(make) {
  const form = $$('.panel').find((p) => !p.hidden);
  const kind = form.id.slice('form-'.length);
  const text = make(kind, form);
  const pre = $('#command');
  pre.textContent = text;
  pre.hidden = false;
  try { await navigator.clipboard.writeText(text); setStatus('copied to the clipboard (shown below the buttons too)', 'done'); } catch (e) { setStatus('the browser did not allow copying: select the command below', 'error'); }
}

function showTab(name) {
  $$('#tabs button').forEach((t) => t.setAttribute('aria-selected', String(t.dataset.tab === name)));
  $$('.panel').forEach((p) => { p.hidden = p.id !== 'form-' + name; });
  $('#command').hidden = true;
}

function setInterpolateMode(seeds) {
  $('#form-interpolate .mode-images').hidden = seeds;
  $('#form-interpolate .mode-seeds').hidden = !seeds;
}

function wire() {
  for (const tab of $$('#tabs button')) {
    tab.addEventListener('click', () => showTab(tab.dataset.tab));
  }
  for (const form of $$('.panel')) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const kind = form.id.slice('form-'.length);
      let body;
      let label;
      let inputs;
      try { [body, label, inputs] = builders[kind](form); } catch (e) { setStatus(e.message, 'error'); return; }
      run(form.dataset.endpoint, body, label, inputs);
    });
  }
  for (const dice of $$('.dice')) {
    dice.addEventListener('click', () => { dice.previousElementSibling.value = Math.floor(Math.random() * 1e6); });
  }
  $('#classes-all').addEventListener('click', () => { $$('#class-picker input').forEach((b) => { b.checked = true; }); updateCount(); });
  $('#classes-none').addEventListener('click', () => { $$('#class-picker input').forEach((b) => { b.checked = false; }); updateCount(); });
  $('#class-picker').addEventListener('change', updateCount);
  $('#form-generate [name=n]').addEventListener('input', updateCount);
  $('#copy-cli').addEventListener('click', () => copyCommand(cliCommand));
  $('#copy-curl').addEventListener('click', () => copyCommand(curlCommand));
  $('#zoom').addEventListener('click', () => $('#zoom').close());
  $('#gallery-max').textContent = GALLERY_MAX;
  $('#gallery-clear').addEventListener('click', () => { $('#gallery').replaceChildren(); saveGallery(); });
  document.addEventListener('paste', onPaste);
  for (const range of $$('input[name=strength]')) {
    range.addEventListener('input', () => { range.nextElementSibling.value = range.value; });
  }
  $('#recolor-clear-like').addEventListener('click', () => $('#form-recolor .slot[data-field="like"]').clear());
  $('#model-select').addEventListener('change', (ev) => switchModel(ev.target.value));
  for (const radio of $$('#form-interpolate input[name=mode]')) {
    radio.addEventListener('change', () => {
      setInterpolateMode(radio.value === 'seeds' && radio.checked);
    });
  }
  $('#cancel').addEventListener('click', () => { if (state.running) state.running.abort(); });
}

document.addEventListener('DOMContentLoaded', async () => {
  makeSlots();
  wire();
  loadGallery();
  try { await loadModel(); } catch (e) { setStatus(String(e), 'error'); }
});
