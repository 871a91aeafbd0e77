// SvgDiffusion studio: talks to the server's own JSON API (nothing else is loaded or contacted).
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

const state = { model: null, running: null, picked: null, results: 0 };

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
  const m = await res.json();
  state.model = m;
  $('#model-info').textContent =
    `${m.name}: ${m.classes.length} classes, ${m.image_size}×${m.image_size} images, latent ${m.latent.grid}×${m.latent.grid}×${m.latent.channels} ` +
    `(${m.latent.semantic} ${m.latent.frozen_encoder} + ${m.latent.residual} residual channels), DiT ${m.dit.depth}×${m.dit.hidden_size}, ${m.precision}`;
  const picker = $('#class-picker');
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
    m.classes.forEach((name) => sel.add(new Option(name, name)));
  }
  for (const el of $$('input[name=n]')) el.max = m.limits.n;
  for (const el of $$('input[name=steps]')) { el.max = m.limits.steps; el.value = m.defaults.steps; }
  for (const el of $$('input[name=frames]')) el.max = m.limits.frames;
  setStatus('ready');
}

// ---- requests with live progress (server-sent events over a POST) ---------------------------------

async function run(endpoint, body, label) {
  if (state.running) state.running.abort();
  const ctrl = new AbortController();
  state.running = ctrl;
  const bar = $('#progress');
  bar.value = 0;
  $('#cancel').disabled = false;
  $$('.go').forEach((b) => { b.disabled = true; });
  setStatus('sending…');
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
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
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
          setStatus(`working: ${obj.done} / ${obj.total}`);
        } else if (event === 'result') {
          bar.value = bar.max;
          show(obj, label);
          setStatus(`done in ${obj.seconds.toFixed(2)} s`, 'done');
        } else if (event === 'error') setStatus(obj.error, 'error');
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

// ---- results and gallery ----------------------------------------------------------------------

function describe(settings) {
  return Object.entries(settings)
    .filter(([k]) => k !== 'labels' && k !== 'model')
    .map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(',') : v}`)
    .join(' · ');
}

function show(result, label, id = 0) {
  const fresh = id === 0;
  if (fresh) id = ++state.results;
  const box = $('#result');
  box.className = '';
  box.replaceChildren();
  const title = document.createElement('h2');
  title.textContent = `#${id} ${label}`;
  const grid = document.createElement('img');
  grid.className = 'grid';
  grid.alt = `${label} result grid`;
  grid.src = pngUrl(result.grid);
  const meta = document.createElement('p');
  meta.className = 'hint';
  meta.textContent = describe(result.settings);
  const download = document.createElement('a');
  download.href = grid.src;
  download.download = `svgd-${id}-${label}.png`;
  download.textContent = 'download grid PNG';
  download.className = 'download';
  const tiles = document.createElement('div');
  tiles.className = 'tiles';
  result.images.forEach((im, i) => {
    const fig = document.createElement('figure');
    const img = document.createElement('img');
    img.src = pngUrl(im.png);
    img.alt = im.class ? `sample ${i} (${im.class})` : `image ${i}`;
    img.title = 'click to pick this image for the edit tabs';
    img.addEventListener('click', () => pick(img, im.png));
    const a = document.createElement('a');
    a.href = img.src;
    a.download = `svgd-${id}-${i}${im.class ? '-' + im.class : ''}.png`;
    a.textContent = im.class || `#${i}`;
    fig.append(img, a);
    tiles.append(fig);
  });
  box.append(title, grid, download, meta, tiles);
  if (!fresh) return;

  const entry = document.createElement('figure');
  entry.className = 'entry';
  const thumb = document.createElement('img');
  thumb.src = grid.src;
  thumb.alt = `gallery #${id}`;
  thumb.addEventListener('click', () => show(result, label, id));
  const cap = document.createElement('figcaption');
  const a = document.createElement('a');
  a.href = grid.src;
  a.download = download.download;
  a.textContent = `#${id} ${label}`;
  cap.append(a);
  entry.append(thumb, cap);
  $('#gallery').prepend(entry);
}

function pick(img, b64) {
  $$('.picked').forEach((x) => x.classList.remove('picked'));
  img.classList.add('picked');
  state.picked = { blob: b64ToBlob(b64), url: img.src };
  $$('.use-picked').forEach((b) => { b.disabled = false; });
  setStatus('picked an image: "use picked image" puts it into an edit slot');
}

// ---- upload slots ------------------------------------------------------------------------------

function makeSlots() {
  for (const slot of $$('.slot')) {
    const fig = $('#slot-template').content.firstElementChild.cloneNode(true);
    $('figcaption', fig).textContent = slot.dataset.title || 'image';
    const img = $('img', fig);
    const input = $('input', fig);
    const setBlob = (blob, url) => {
      slot.blob = blob;
      img.src = url;
      img.hidden = false;
    };
    input.addEventListener('change', () => {
      const f = input.files[0];
      if (f) setBlob(f, URL.createObjectURL(f));
    });
    $('.use-picked', fig).addEventListener('click', () => {
      if (state.picked) setBlob(state.picked.blob, state.picked.url);
    });
    slot.append(fig);
  }
}

function slotFile(form, field) {
  const slot = $(`.slot[data-field="${field}"]`, form);
  if (!slot.blob) throw new Error(`choose an image for "${slot.dataset.title || field}"`);
  return slot.blob;
}

// ---- the forms ---------------------------------------------------------------------------------

const num = (form, name) => Number($(`[name="${name}"]`, form).value);
const str = (form, name) => $(`[name="${name}"]`, form).value;

const builders = {
  generate(form) {
    const classes = $$('#class-picker input:checked').map((b) => b.value);
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
  mix(form) {
    const fd = new FormData();
    fd.append('semantic', slotFile(form, 'semantic'), 'semantic.png');
    fd.append('detail', slotFile(form, 'detail'), 'detail.png');
    return [fd, 'mix'];
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
    return [fd, 'reconstruct'];
  },
};

function wire() {
  for (const tab of $$('#tabs button')) {
    tab.addEventListener('click', () => {
      $$('#tabs button').forEach((t) => t.setAttribute('aria-selected', String(t === tab)));
      $$('.panel').forEach((p) => { p.hidden = p.id !== 'form-' + tab.dataset.tab; });
    });
  }
  for (const form of $$('.panel')) {
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const kind = form.id.slice('form-'.length);
      let body;
      let label;
      try { [body, label] = builders[kind](form); } catch (e) { setStatus(e.message, 'error'); return; }
      run(form.dataset.endpoint, body, label);
    });
  }
  for (const dice of $$('.dice')) {
    dice.addEventListener('click', () => { dice.previousElementSibling.value = Math.floor(Math.random() * 1e6); });
  }
  $('#classes-all').addEventListener('click', () => $$('#class-picker input').forEach((b) => { b.checked = true; }));
  $('#classes-none').addEventListener('click', () => $$('#class-picker input').forEach((b) => { b.checked = false; }));
  const range = $('#form-vary input[name=strength]');
  range.addEventListener('input', () => { range.nextElementSibling.value = range.value; });
  for (const radio of $$('#form-interpolate input[name=mode]')) {
    radio.addEventListener('change', () => {
      const seeds = radio.value === 'seeds' && radio.checked;
      $('#form-interpolate .mode-images').hidden = seeds;
      $('#form-interpolate .mode-seeds').hidden = !seeds;
    });
  }
  $('#cancel').addEventListener('click', () => { if (state.running) state.running.abort(); });
}

document.addEventListener('DOMContentLoaded', async () => {
  makeSlots();
  wire();
  try { await loadModel(); } catch (e) { setStatus(String(e), 'error'); }
});
