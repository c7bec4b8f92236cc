/**
 * huggingface_hub's lock on a blob, so that a Glance pull and a Python download of the same file
 * wait for each other: an exclusive flock(2) on `<HF_HUB_CACHE>/.locks/models--org--name/<etag>.lock`
 * (hub-cache.ts's lockPath), the file opened read-write (created, never truncated), made
 * group-writable once locked and never removed, as filelock's UnixFileLock does it under
 * huggingface_hub's WeakFileLock. Removing the file would let a process that opens it afresh lock
 * another inode than one still waiting.
 *
 * Node has no flock binding. The native addon fs-ext has one, but it builds at install time, so
 * every image that installs Glance would need Python, make and a C++ compiler (the Dockerfile's
 * slim base has none). util-linux's `flock` command (Essential in Debian, so in every Debian
 * image; busybox has one too) takes the lock instead, on a descriptor this process opened and
 * hands it: a flock(2) lock belongs to the open file description, so it stays held after the
 * command exits, until this process closes the file or dies, as Python's does.
 */
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import path from "node:path";

/** How often a wait for another process's lock is logged, as WeakFileLock does. */
const WAIT_LOG_MS = 10_000;

/**
 * Holds the lock on `file` until the returned release, waiting for as long as another process
 * (Glance or Python) holds it; `onWait` is called every 10 s meanwhile with the seconds waited.
 */
export async function lockBlob(file: string, onWait?: (seconds: number) => void): Promise<() => Promise<void>> {
  await mkdir(path.dirname(file), { recursive: true });
  const handle = await open(file, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o664);
  try {
    await flock(handle.fd, file, onWait);
  } catch (e) {
    await handle.close();
    throw e;
  }
  // Group-writable whatever the umask, so that users sharing a cache can lock it (WeakFileLock's mode).
  await handle.chmod(0o664).catch(() => {});
  return () => handle.close();
}

function flock(fd: number, file: string, onWait?: (seconds: number) => void): Promise<void> {
  const start = Date.now();
  const waiting = setInterval(() => onWait?.(Math.round((Date.now() - start) / 1000)), WAIT_LOG_MS);
  return new Promise<void>((resolve, reject) => {
    // The descriptor is the command's fd 3; `flock -x 3` locks it and exits.
    const child = spawn("flock", ["-x", "3"], { stdio: ["ignore", "ignore", "pipe", fd] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", (e) =>
      reject(
        new Error(
          `could not run the flock command to lock ${file} (${e.message}): a pull locks each file as huggingface_hub does, with util-linux's flock; install util-linux`,
        ),
      ),
    );
    child.on("exit", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`flock could not lock ${file} (${signal ?? `exit ${code}`}): ${stderr.trim() || "no message"}`));
    });
  }).finally(() => clearInterval(waiting));
}
