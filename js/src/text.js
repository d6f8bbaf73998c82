// Text in received bytes, read without making a string or a view where
// none is needed: every delivered event's headers are looked at, and most
// of their values repeat from one event to the next (the same sender, room
// and kind), so a string made once is handed out again.

const utf8 = new TextDecoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Whether `b[at..at+len]` is valid UTF-8 (ASCII checked without decoding). */
export function isUtf8(b, at, len) {
  for (let i = at, end = at + len; i < end; i++) {
    if (b[i] >= 0x80) {
      try {
        strictUtf8.decode(b.subarray(at, end));
        return true;
      } catch {
        return false;
      }
    }
  }
  return true;
}

/** The code units of `s` if every one is ASCII (then its UTF-8 bytes are
 * the same), else null. */
export function asciiCodes(s) {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) return null;
    out[i] = c;
  }
  return out;
}

/** Whether `b[at..at+len]` holds exactly the bytes `want`. */
export function bytesEqual(b, at, len, want) {
  if (len !== want.length) return false;
  for (let i = 0; i < len; i++) if (b[at + i] !== want[i]) return false;
  return true;
}

/** `b[at..at+len]` as text (invalid UTF-8 replaced, as TextDecoder does). */
export function decodeText(b, at, len) {
  return utf8.decode(b.subarray(at, at + len));
}

/**
 * The last text decoded for one field, given again while the bytes are the
 * same: no string, no view, no decoder call for a repeated value.
 */
export class TextCache {
  constructor(capacity = 64) {
    this.bytes = new Uint8Array(capacity);
    this.len = -1;
    this.text = "";
  }

  get(b, at, len) {
    if (len === this.len) {
      const k = this.bytes;
      let i = 0;
      while (i < len && b[at + i] === k[i]) i++;
      if (i === len) return this.text;
    }
    this.text = decodeText(b, at, len);
    // Values longer than the capacity are decoded each time (not kept).
    if (len <= this.bytes.length) {
      this.bytes.set(b.subarray(at, at + len));
      this.len = len;
    } else {
      this.len = -1;
    }
    return this.text;
  }
}
