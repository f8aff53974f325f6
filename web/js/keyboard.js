// The touch screen has no keyboard: with ?kiosk=1 a simple one appears under any focused text field.
// Keys act on pointerdown and cancel the default, so the field keeps its focus and caret.
import { h } from './dom.js';
import { t } from './i18n.js';

const ROWS = [
  '1234567890',
  'qwertyuiop',
  'asdfghjkl',
  'zxcvbnm',
];
const SYMBOLS = ['.', '/', ':', '-', '_'];
const TEXT_TYPES = new Set(['text', 'search', 'url', 'number', 'email']);

let target = null;
let shift = false;
let board = null;

function isText(el) {
  return (el instanceof HTMLInputElement && TEXT_TYPES.has(el.type)) || el instanceof HTMLTextAreaElement;
}

function key(label, action, cls = '') {
  const button = h(`button${cls}`, { type: 'button', tabIndex: -1, text: label });
  button.addEventListener('pointerdown', (event) => {
    event.preventDefault();
    action();
  });
  // A click from assistive tech or a test driver, without the pointerdown above.
  button.addEventListener('click', (event) => { if (event.detail === 0) action(); });
  return button;
}

// Number inputs have no selection API: they are edited at their end.
function insert(text) {
  if (!target) return;
  try {
    target.setRangeText(text, target.selectionStart, target.selectionEnd, 'end');
  } catch {
    target.value += text;
  }
  target.dispatchEvent(new Event('input', { bubbles: true }));
}

function backspace() {
  if (!target) return;
  try {
    const start = target.selectionStart;
    const end = target.selectionEnd;
    if (start === end && start > 0) target.setRangeText('', start - 1, end, 'end');
    else target.setRangeText('', start, end, 'end');
  } catch {
    target.value = target.value.slice(0, -1);
  }
  target.dispatchEvent(new Event('input', { bubbles: true }));
}

function letters(row) {
  return Array.from(row, (c) => key(c, () => {
    insert(shift ? c.toUpperCase() : c);
    if (shift) toggleShift();
  }));
}

function toggleShift() {
  shift = !shift;
  for (const button of board.querySelectorAll('button')) {
    if (button.textContent.length === 1 && /[a-z]/i.test(button.textContent)) {
      button.textContent = shift ? button.textContent.toUpperCase() : button.textContent.toLowerCase();
    }
  }
}

// Enter submits the field's form, as a real keyboard's would.
function done() {
  const field = target;
  hide();
  if (field && field.form && field instanceof HTMLInputElement) field.form.requestSubmit();
  if (field) field.blur();
}

function show(el) {
  target = el;
  board.hidden = false;
  document.documentElement.style.setProperty('--osk', `${board.offsetHeight}px`);
  board.querySelector('.done').textContent = t('kb.done');
  board.querySelector('.space').textContent = t('kb.space');
  requestAnimationFrame(() => el.scrollIntoView({ block: 'center', behavior: 'smooth' }));
}

function hide() {
  target = null;
  board.hidden = true;
  document.documentElement.style.setProperty('--osk', '0px');
}

export function installKeyboard() {
  board = h('div.osk', { hidden: true, role: 'group', label: 'kb.keyboard' },
    ...ROWS.map((row, i) => h('div.r', {}, letters(row), i === 3 ? key('⌫', backspace, '.mid') : null)),
    h('div.r', {},
      key('⇧', toggleShift, '.mid'),
      SYMBOLS.map((s) => key(s, () => insert(s))),
      key(' ', () => insert(' '), '.wide.space'),
      key('', done, '.mid.done')));
  document.body.append(board);
  document.addEventListener('focusin', (event) => {
    if (isText(event.target)) {
      event.target.inputMode = 'none'; // no second (system) keyboard on top of this one
      show(event.target);
    }
  });
  document.addEventListener('focusout', () => {
    // Focus moving to another field shows the board again at once; anywhere else hides it.
    setTimeout(() => { if (!isText(document.activeElement)) hide(); }, 0);
  });
}
