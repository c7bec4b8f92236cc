/**
 * The batch's progress on stderr: count, rate and ETA. On a terminal, cli-progress redraws one
 * bar in place. Anywhere else (a CI log, `2> run.log`, a pipe) redrawing in place means carriage
 * returns and escape codes that turn a log into noise, so cli-progress's no-TTY mode prints one
 * plain line every two seconds instead, and a last one when the batch ends.
 */
import cliProgress from "cli-progress";

export interface Progress {
  /** The counts so far: items finished (answered or failed), and how many of them failed. */
  update(finished: number, failed: number): void;
  /** Draws the final state and releases the terminal line. */
  stop(): void;
}

export interface ProgressOptions {
  total: number;
  stream: NodeJS.WriteStream;
  /** Between two lines when the stream is not a terminal. */
  plainIntervalMs?: number;
}

/** Items a second over the whole run: the ETA cli-progress computes reacts to bursts, the rate should not. */
const rate = (finished: number, startedAt: number) => {
  const seconds = (performance.now() - startedAt) / 1000;
  return seconds > 0 ? (finished / seconds).toFixed(1) : "0.0";
};

export function createProgress({ total, stream, plainIntervalMs = 2000 }: ProgressOptions): Progress {
  const tty = stream.isTTY === true;
  const bar = new cliProgress.SingleBar({
    stream,
    format: tty
      ? "batch [{bar}] {value}/{total} {percentage}% | {rate}/s | ETA {eta_formatted} | {failed} failed"
      : "batch {value}/{total} {percentage}% | {rate}/s | ETA {eta_formatted} | {failed} failed",
    barCompleteChar: "=",
    barIncompleteChar: "-",
    hideCursor: false,
    noTTYOutput: true,
    notTTYSchedule: plainIntervalMs,
    // Off a terminal each line ends with its own newline: clearing "on complete" then only skips
    // the blank line cli-progress would add after the last one.
    clearOnComplete: !tty,
    etaBuffer: 50,
    fps: 5,
  });
  const startedAt = performance.now();
  let finished = 0;
  let failed = 0;
  bar.start(total, 0, { rate: "0.0", failed: 0 });
  return {
    update(nowFinished, nowFailed) {
      finished = nowFinished;
      failed = nowFailed;
      bar.update(finished, { rate: rate(finished, startedAt), failed });
    },
    stop() {
      bar.update(finished, { rate: rate(finished, startedAt), failed });
      bar.stop();
    },
  };
}
