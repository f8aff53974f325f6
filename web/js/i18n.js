// Strings come from i18n/<lang>.json; the node's `ui` topic says which language every screen uses.
// t() is the only way views get text, so a language change is a re-render, never a reload.

// Native names: a person looking for their language must recognise it whatever the current one is.
export const LANGUAGES = {
  en: 'English', fr: 'Français', es: 'Español', de: 'Deutsch',
  it: 'Italiano', pt: 'Português', hi: 'हिन्दी', zh: '中文',
};
const STORE_KEY = 'milo.language';

let strings = {};
let current = null;
let wanted = null;
const listeners = new Set();
// Parts of the strings a view loads when it first needs them (i18n/<part>/<lang>.json): the settings'
// label and help of every config key would double what the first paint waits for.
const parts = new Set();

async function fetchStrings(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// The part's strings in the current language, and in every language chosen from now on.
export async function loadPart(part) {
  if (parts.has(part) || !current) return;
  parts.add(part);
  const lang = current;
  const loaded = await fetchStrings(`i18n/${part}/${lang}.json`).catch((e) => { parts.delete(part); throw e; });
  if (lang === current) Object.assign(strings, loaded);
}

export function language() {
  return current;
}

// `{name}` placeholders are filled from vars; a missing key shows as itself so it is noticed.
export function t(key, vars) {
  const text = strings[key] ?? key;
  return vars ? text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m)) : text;
}

// Like t(), for keys built from data (a source name, an error code): the fallback when there is none.
export function tOr(key, fallback, vars) {
  return key in strings ? t(key, vars) : fallback;
}

export function onLanguage(fn) {
  listeners.add(fn);
}

// The language last used on this screen, so the first paint needs no round trip to the node.
export function remembered() {
  try {
    const lang = localStorage.getItem(STORE_KEY);
    if (lang && lang in LANGUAGES) return lang;
  } catch { /* storage may be disabled: English it is */ }
  return 'en';
}

export async function setLanguage(lang) {
  if (!(lang in LANGUAGES)) lang = 'en';
  wanted = lang;
  if (lang === current) return;
  let asked;
  let loaded;
  let extra;
  do {
    // A part a view asked for while this language was on its way is fetched in it too.
    asked = [...parts];
    [loaded, ...extra] = await Promise.all([
      fetchStrings(`i18n/${lang}.json`),
      ...asked.map((part) => fetchStrings(`i18n/${part}/${lang}.json`)),
    ]);
    // A slower, older request must not win over the latest choice.
    if (wanted !== lang) return;
  } while (asked.length !== parts.size);
  strings = Object.assign(loaded, ...extra);
  current = lang;
  try { localStorage.setItem(STORE_KEY, lang); } catch { /* not persisted locally: the node has it */ }
  document.documentElement.lang = lang;
  translate(document);
  for (const fn of listeners) fn(lang);
}

// Static markup names its strings with data-i18n (text), data-i18n-label (aria-label and title)
// and data-i18n-ph (placeholder).
export function translate(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
    el.title = t(el.dataset.i18nLabel);
  }
  for (const el of root.querySelectorAll('[data-i18n-ph]')) el.placeholder = t(el.dataset.i18nPh);
}
