/** A one-line progress bar on stderr, drawn only when stderr is a terminal. */
export interface Progress {
  update(done: number, note?: string): void;
  end(): void;
}

export function progress(label: string, total: number): Progress {
  const tty = process.stderr.isTTY === true;
  const started = performance.now();
  let lastDraw = 0;
  const draw = (done: number, note: string) => {
    const width = 30;
    const filled = total > 0 ? Math.min(width, Math.round((done / total) * width)) : 0;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const line = `${label.padEnd(22)} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total} ${seconds}s ${note}`;
    const columns = process.stderr.columns ?? 120;
    process.stderr.write(`\r\x1b[2K${line.slice(0, columns - 1)}`);
  };
  return {
    update(done, note = "") {
      if (!tty) return;
      const t = performance.now();
      if (t - lastDraw < 100 && done < total) return;
      lastDraw = t;
      draw(done, note);
    },
    end() {
      if (tty) process.stderr.write("\r\x1b[2K");
    },
  };
}

/** A line of news on stderr (between progress bars), always shown. */
export function note(message: string): void {
  process.stderr.write(`${message}\n`);
}
