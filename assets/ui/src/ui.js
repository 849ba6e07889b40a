// Small shared pieces: the htm binding, a confirmation dialog, status badges, banners, polling.
import { h } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import htm from 'htm';

export const html = htm.bind(h);

export const STATUSES = ['STOPPED', 'STARTING', 'SCAN_QR_CODE', 'WORKING', 'FAILED'];

export function StatusBadge({ status }) {
  const s = status ?? 'UNKNOWN';
  return html`<span class=${`badge badge-${s.toLowerCase()}`} data-status=${s}>${s}</span>`;
}

/** A message for the reader; errors are announced at once, notes politely. */
export function Banner({ kind = 'info', children }) {
  return html`<div class=${`banner banner-${kind}`} role=${kind === 'error' ? 'alert' : 'status'}>${children}</div>`;
}

/**
 * A modal confirmation (native <dialog>: focus stays inside, Escape cancels). Enter confirms,
 * because the confirm button is the form's submit button and has the focus.
 */
export function ConfirmDialog({ open, title, children, confirmLabel = 'Confirm', danger, onConfirm, onCancel }) {
  const ref = useRef(null);
  const confirm = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) {
      d.showModal();
      confirm.current?.focus();
    } else if (!open && d.open) {
      d.close();
    }
  }, [open]);
  return html`
    <dialog ref=${ref} class="dialog" aria-labelledby="dialog-title"
      onCancel=${(e) => { e.preventDefault(); onCancel(); }}>
      <form onSubmit=${(e) => { e.preventDefault(); onConfirm(); }}>
        <h2 id="dialog-title">${title}</h2>
        <div class="dialog-body">${children}</div>
        <div class="dialog-actions">
          <button type="button" onClick=${onCancel}>Cancel</button>
          <button type="submit" ref=${confirm} class=${danger ? 'danger' : 'primary'}>${confirmLabel}</button>
        </div>
      </form>
    </dialog>`;
}

/** Runs `load` now and every `ms` while the tab is visible; returns [value, error, reload]. */
export function usePoll(load, ms, deps = []) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let stopped = false;
    let timer = null;
    const ctl = new AbortController();
    const run = async () => {
      try {
        const v = await load(ctl.signal);
        if (!stopped) { setValue(v); setError(null); }
      } catch (e) {
        if (!stopped && e.name !== 'AbortError') setError(e);
      }
      if (!stopped && ms) timer = setTimeout(tickIfVisible, ms);
    };
    // A hidden tab does not poll; it catches up when shown again.
    const tickIfVisible = () => {
      if (document.hidden) {
        document.addEventListener('visibilitychange', run, { once: true });
      } else {
        run();
      }
    };
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', run);
      ctl.abort();
    };
  }, [...deps, tick]);
  return [value, error, () => setTick((t) => t + 1)];
}

export function bytes(n) {
  if (n == null) return '–';
  const mib = n / (1024 * 1024);
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib.toFixed(0)} MiB`;
}

export function ago(ms) {
  if (!ms) return '–';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export const sessionHref = (ws, s) => `#/sessions/${encodeURIComponent(ws)}/${encodeURIComponent(s)}`;
