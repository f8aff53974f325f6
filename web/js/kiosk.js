// The kiosk page (`?kiosk=1`, opened by the kiosk unit on the node's own display): touches and keys
// are activity for the `screen` subsystem, which keeps the backlight on and wakes it. The phone UI
// never loads this module, so nothing done on a phone wakes the node's screen.
import * as node from './node.js';

// While lit, activity is told at most this often (the screen's timeout is minutes).
const EVERY_MS = 5000;

function isDark() {
  const screen = node.get('screen');
  return Boolean(screen && typeof screen === 'object' && screen.available && screen.on === false);
}

export function installActivity() {
  let last = 0;
  let swallowClick = false;
  // On the body for styles and tests: `data-screen` is `dark` while the backlight is off.
  const mark = () => { document.body.dataset.screen = isDark() ? 'dark' : 'lit'; };
  node.onChange((paths) => { if (!paths.size || paths.has('screen')) mark(); });
  mark();
  const report = (event) => {
    const dark = isDark();
    if (event.type === 'pointerdown') swallowClick = dark;
    if (dark) {
      // The touch that wakes a dark screen only wakes it: it must not press what is under the finger.
      event.preventDefault();
      event.stopPropagation();
    }
    const now = Date.now();
    if (!dark && now - last < EVERY_MS) return;
    last = now;
    node.send('screen/set', 'activity');
  };
  for (const type of ['pointerdown', 'keydown', 'wheel']) {
    document.addEventListener(type, report, { capture: true, passive: false });
  }
  document.addEventListener('click', (event) => {
    if (!swallowClick) return;
    swallowClick = false;
    event.preventDefault();
    event.stopPropagation();
  }, { capture: true });
}
