// One render loop for the whole page: a view reads module state while rendering, and any
// change to that state calls invalidate(), which renders again on the next animation frame.

let scheduled = false;
let renderer: (() => void) | null = null;

export function setRenderer(render: () => void): void {
  renderer = render;
}

export function invalidate(): void {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    renderer?.();
  });
}

/** A value loaded from the API: not yet, loading, loaded or failed, with the error's text. */
export type Load<T> =
  | { state: "idle" }
  | { state: "loading" }
  | { state: "ready"; value: T }
  | { state: "error"; message: string };

export const idle = { state: "idle" } as const;
