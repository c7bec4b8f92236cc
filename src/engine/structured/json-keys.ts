/**
 * The names written in each open object of a JSON text, read byte by byte as a sequence accepts
 * them: a byte automaton cannot remember them, so a request that must never repeat a name in an
 * object keeps this beside its automaton state (see unique-names.ts). Names are compared as
 * JavaScript strings after JSON unescaping: `"a"`, `"\u0061"` and `"\/"`/`"/"` pairs are the
 * same name, and a surrogate pair written as two `\u` escapes is the character it encodes.
 *
 * The bytes of a token can be tried without changing what has been accepted: `begin` starts a
 * trial over the accepted state, whose frames pushed and names added stay the trial's own until
 * `commit` makes it the accepted state.
 */

/** An accepted object's names, or null for an array. */
type Frame = Set<string> | null;
/** A trial's own frame: an object's names in a list (a token adds a few), or null for an array. */
type TrialFrame = string[] | null;

/** The characters a simple escape stands for, by the byte after the backslash. */
const ESCAPED = new Map([...'"\\/bfnrt'].map((c, i) => [c.charCodeAt(0), '"\\/\b\f\n\r\t'[i]!]));

const hexValue = (b: number) => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x57);

/** Where in the text the reader is, outside the stack of open objects and arrays. */
export class Lexer {
  inString = false;
  /** The open string is an object's name. */
  isKey = false;
  /** The innermost object waits for a name (after `{` or `,`). */
  awaitsKey = false;
  /** 0: no escape; 1: after `\`; 2 to 5: after `\u` and that many hex digits less 2. */
  escape = 0;
  /** The code unit of a `\u` escape, or the code point of a UTF-8 character, so far. */
  code = 0;
  /** Continuation bytes the UTF-8 character still needs. */
  utf8Left = 0;
  /** The open name's text so far, unescaped. */
  name = "";

  copy(from: Lexer): void {
    this.inString = from.inString;
    this.isKey = from.isKey;
    this.awaitsKey = from.awaitsKey;
    this.escape = from.escape;
    this.code = from.code;
    this.utf8Left = from.utf8Left;
    this.name = from.name;
  }

  /** A byte inside a string: the name grows only in a key, and the closing quote ends it. */
  stringByte(b: number): void {
    let char: string | undefined;
    if (this.escape === 1) {
      if (b === 0x75) {
        this.escape = 2;
        this.code = 0;
      } else {
        this.escape = 0;
        char = ESCAPED.get(b);
      }
    } else if (this.escape > 1) {
      this.code = this.code * 16 + hexValue(b);
      if (++this.escape === 6) {
        this.escape = 0;
        char = String.fromCharCode(this.code);
      }
    } else if (this.utf8Left > 0) {
      this.code = (this.code << 6) | (b & 0x3f);
      if (--this.utf8Left === 0) char = String.fromCodePoint(this.code);
    } else if (b === 0x22) this.inString = false;
    else if (b === 0x5c) this.escape = 1;
    else if (b >= 0xc0) {
      this.utf8Left = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : 1;
      this.code = b & (0x3f >> this.utf8Left);
    } else char = String.fromCharCode(b);
    if (char !== undefined && this.isKey) this.name += char;
  }

  /** In a name with no escape or character half read. */
  get inWholeName(): boolean {
    return this.inString && this.isKey && this.escape === 0 && this.utf8Left === 0;
  }
}

export class JsonKeys {
  private readonly frames: Frame[] = [];
  private readonly accepted = new Lexer();
  /** The most names any object has held. */
  private most = 0;
  /** The trial: the accepted frames below `floor` are its own bottom, `pushed` its own top. */
  readonly trial = new Lexer();
  private floor = 0;
  private readonly pushed: TrialFrame[] = [];
  /** Names the trial added to accepted frame `floor - 1`. */
  private readonly added: string[] = [];

  /** The most names any object has held so far. */
  get mostNames(): number {
    return this.most;
  }

  /** Starts a trial at the accepted state. */
  begin(): void {
    this.trial.copy(this.accepted);
    this.floor = this.frames.length;
    this.pushed.length = 0;
    this.added.length = 0;
  }

  /** Makes the trial the accepted state. */
  commit(): void {
    this.frames.length = this.floor;
    const top = this.frames[this.floor - 1];
    for (const name of this.added) top!.add(name);
    if (top) this.most = Math.max(this.most, top.size);
    for (const frame of this.pushed) {
      this.frames.push(frame && new Set(frame));
      if (frame) this.most = Math.max(this.most, frame.length);
    }
    this.accepted.copy(this.trial);
  }

  /** Whether the trial's bytes from `begin` go on through `bytes` without repeating a name. */
  tryBytes(bytes: Uint8Array): boolean {
    for (const b of bytes) if (!this.feed(b)) return false;
    return true;
  }

  /** Whether the trial's innermost object holds `name`. */
  has(name: string): boolean {
    if (this.pushed.length > 0) return this.pushed.at(-1)?.includes(name) ?? false;
    const top = this.frames[this.floor - 1];
    // An empty object holds nothing: no need to hash (and so flatten) a long name.
    return (top ? top.size > 0 && top.has(name) : false) || (this.added.length > 0 && this.added.includes(name));
  }

  /** The names of the trial's innermost object. */
  *names(): Iterable<string> {
    if (this.pushed.length > 0) {
      yield* this.pushed.at(-1) ?? [];
      return;
    }
    yield* this.frames[this.floor - 1] ?? [];
    yield* this.added;
  }

  /**
   * One more byte of the trial; false when it closes a name its object already holds (the
   * trial then stops meaning anything). Only the lexer changes inside a string.
   */
  feed(b: number): boolean {
    const lex = this.trial;
    if (lex.inString) {
      lex.stringByte(b);
      if (lex.inString) return true;
      if (!lex.isKey) return true;
      if (this.has(lex.name)) return false;
      this.addName(lex.name);
      return true;
    }
    switch (b) {
      case 0x22:
        lex.inString = true;
        lex.isKey = lex.awaitsKey;
        lex.awaitsKey = false;
        lex.name = "";
        break;
      case 0x7b:
        this.pushed.push([]);
        lex.awaitsKey = true;
        break;
      case 0x5b:
        this.pushed.push(null);
        lex.awaitsKey = false;
        break;
      case 0x7d:
      case 0x5d:
        if (this.pushed.length > 0) this.pushed.pop();
        else if (this.floor > 0) {
          this.floor--;
          this.added.length = 0;
        }
        lex.awaitsKey = false;
        break;
      case 0x2c:
        lex.awaitsKey = this.innermostIsObject();
        break;
    }
    return true;
  }

  private innermostIsObject(): boolean {
    if (this.pushed.length > 0) return this.pushed.at(-1) !== null;
    return (this.frames[this.floor - 1] ?? null) !== null;
  }

  private addName(name: string): void {
    const top = this.pushed.at(-1);
    if (top) top.push(name);
    else this.added.push(name);
  }
}
