// Run in the page by tests/ui/test_layout.py: shows each scene (a view, a radio tab) in turn and lists
// the text that does not fit: content wider than its box, a translated string or a control cut by an
// ellipsis, a word broken inside, anything past the viewport's left or right edge.
async ({ scenes, chrome }) => {
  const found = [];
  const seen = {}; // scene -> how many elements with text were measured, so a blank scene is noticed
  const CONTROLS = new Set(['BUTTON', 'SUMMARY', 'LABEL', 'SELECT', 'OPTION', 'A', 'DT', 'H2', 'B']);
  const FIELDS = new Set(['text', 'search', 'url', 'number', 'password', 'email']);
  // Chinese (and Japanese) lines may break between any two characters: not a broken word.
  const CJK = /[\u3000-\u9fff\uf900-\ufaff\uff00-\uffef]/;
  const segmenter = new Intl.Segmenter(document.documentElement.lang, { granularity: 'word' });
  const canvas = document.createElement('canvas').getContext('2d');
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => resolve()));

  function name(el) {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      let part = e.tagName.toLowerCase();
      if (e.id) part += `#${e.id}`;
      else {
        const cls = [...e.classList].slice(0, 2).join('.');
        if (cls) part += `.${cls}`;
        const data = Object.entries(e.dataset).find(([k]) => k !== 'i18n');
        if (data) part += `[data-${data[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}=${data[1]}]`;
      }
      parts.unshift(part);
      if (e.id) break;
    }
    return parts.join(' > ');
  }

  function ownText(el) {
    return [...el.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
  }

  // Inside a sideways scroller (the chips of sources and presets) being past an edge is by design.
  function inScroller(el, root) {
    for (let p = el.parentElement; p && p !== root; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX;
      if (o === 'auto' || o === 'scroll') return true;
    }
    return false;
  }

  function translated(el) {
    return el.closest('[data-i18n]') !== null || el.querySelector('[data-i18n]') !== null;
  }

  function report(scene, el, kind, detail) {
    const text = (el.value || el.placeholder || el.textContent || el.getAttribute('aria-label') || '').trim();
    found.push({ scene, selector: name(el), kind, text: text.replace(/\s+/g, ' ').slice(0, 70), detail });
  }

  // A field's text (its value, else its placeholder) is measured against its content box.
  function field(scene, el, style) {
    const text = el.tagName === 'SELECT' ? el.selectedOptions[0]?.textContent || '' : el.value || el.placeholder;
    if (!text) return;
    canvas.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const width = canvas.measureText(text).width;
    const arrow = el.tagName === 'SELECT' ? 20 : 0;
    const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - arrow;
    // A typed value may scroll in its field; a placeholder or a chosen option must show whole.
    if (el.value && el.tagName !== 'SELECT') return;
    if (width > room + 1) report(scene, el, 'field text cut', `${Math.round(width)} px in ${Math.round(room)} px`);
  }

  // `room`: the width of a whole line of the view.
  function brokenWords(scene, el, room) {
    for (const node of ownText(el)) {
      for (const seg of segmenter.segment(node.textContent)) {
        if (!seg.isWordLike || seg.segment.length < 2 || CJK.test(seg.segment)) continue;
        const range = document.createRange();
        range.setStart(node, seg.index);
        range.setEnd(node, seg.index + seg.segment.length);
        const rects = [...range.getClientRects()].filter((r) => r.width > 0);
        const lines = new Set(rects.map((r) => Math.round(r.top)));
        if (lines.size < 2) continue;
        // A token wider than a whole line of the view (an address, a URL) can only be broken.
        const width = rects.reduce((sum, r) => sum + r.width, 0);
        if (width > room) continue;
        report(scene, el, 'word broken', `"${seg.segment}" over ${lines.size} lines`);
      }
    }
  }

  function check(scene, root) {
    if (!root || root.getClientRects().length === 0) return;
    const rootStyle = getComputedStyle(root);
    const line = root.clientWidth - parseFloat(rootStyle.paddingLeft) - parseFloat(rootStyle.paddingRight);
    if (root.scrollWidth > root.clientWidth + 1 && getComputedStyle(root).overflowX !== 'visible') {
      report(scene, root, 'scrolls sideways', `${root.scrollWidth} px in ${root.clientWidth} px`);
    }
    for (const el of root.querySelectorAll('*')) {
      if (el.closest('svg') || el.getClientRects().length === 0) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden') continue;
      if (inScroller(el, root)) continue;
      const box = el.getBoundingClientRect();
      if (box.width > 0 && (box.right > innerWidth + 1 || box.left < -1)) {
        report(scene, el, 'past the viewport', `${Math.round(box.left)}..${Math.round(box.right)} of ${innerWidth}`);
      }
      if (el.tagName === 'INPUT' && !FIELDS.has(el.type)) continue;
      if (el.tagName === 'INPUT' || el.tagName === 'SELECT' || el.tagName === 'TEXTAREA') {
        field(scene, el, style);
        continue;
      }
      const text = ownText(el).length > 0;
      if (!text && !CONTROLS.has(el.tagName)) continue;
      seen[scene] = (seen[scene] || 0) + 1;
      if (style.display !== 'inline' && el.scrollWidth > el.clientWidth + 1 && style.overflowX !== 'auto') {
        // Data (a title, a station's name) may end in an ellipsis; a label or a control may not.
        const control = CONTROLS.has(el.tagName) || el.matches('[role=tab], nav *');
        if (style.textOverflow === 'ellipsis' && !control && !translated(el)) {
          // allowed
        } else {
          const kind = style.textOverflow === 'ellipsis' ? 'cut by ellipsis' : 'wider than its box';
          report(scene, el, kind, `${el.scrollWidth} px in ${el.clientWidth} px`);
        }
      }
      if (['hidden', 'clip'].includes(style.overflowY) && el.scrollHeight > el.clientHeight + 1 && el.clientHeight > 0) {
        report(scene, el, 'cut at the bottom', `${el.scrollHeight} px in ${el.clientHeight} px`);
      }
      if (text) brokenWords(scene, el, line);
    }
  }

  async function showView(view) {
    if (location.hash !== `#${view}`) {
      const changed = new Promise((resolve) => addEventListener('hashchange', resolve, { once: true }));
      location.hash = view;
      await changed;
    }
    const section = document.getElementById(`view-${view}`);
    // A view fetched when first shown (settings: js/main.js lazy) is measured once it is there.
    for (let i = 0; i < 300 && !section.querySelector('fieldset.controls[data-loaded]'); i += 1) await frame();
    return section;
  }

  // `view`, `view:tab`, or `view:tab:keyboard` (the kiosk's on-screen keyboard under the first field).
  for (const scene of scenes) {
    const [view, tab, keyboard] = scene.split(':');
    const section = await showView(view);
    if (tab) section.querySelector(`[data-tab=${tab}]`).click();
    for (const details of section.querySelectorAll('details')) details.open = true;
    const field = keyboard ? section.querySelector('input[type=search], input[type=text]:not([hidden])') : null;
    field?.focus();
    await frame();
    check(scene, section);
    if (field) {
      check(`${scene}:osk`, document.querySelector('.osk'));
      field.blur();
    }
    if (scene === scenes[0]) {
      for (const selector of chrome) check(selector, document.querySelector(selector));
    }
  }
  return { found, seen };
}
