// Errors of the Herald client. Every failure is a HeraldError whose `code`
// says what kind: a broker error code name (docs/protocol.md section 8),
// or one of the client's own: ConnectionLost, Timeout, InvalidArgument,
// Protocol, Connect.

/** Broker error codes by number; numbers never change meaning. */
export const ERROR_CODES = Object.freeze({
  1: "BadFrame",
  2: "UnsupportedVersion",
  3: "HandshakeRequired",
  4: "UnknownTopic",
  5: "Unauthorized",
  6: "TooLarge",
  7: "Busy",
  8: "Internal",
  9: "InvalidArgument",
  10: "TopicExists",
  11: "UnknownSubscription",
  12: "SequenceGap",
  13: "StorageFull",
  14: "TopicUnavailable",
  15: "GroupActive",
  16: "ShuttingDown",
  17: "Corrupt",
  18: "UnknownGroup",
  19: "GroupUnavailable",
  20: "RoomUnavailable",
  21: "TokenExpired",
  22: "NotLeader",
});

/** Codes whose request may succeed if retried later. */
const RETRYABLE = new Set(["Busy", "StorageFull", "ShuttingDown", "NotLeader"]);

export class HeraldError extends Error {
  /**
   * @param {string} code a broker code name, or the client's own
   * @param {string} message
   * @param {number} [number] the broker's numeric code, if it came from one
   */
  constructor(code, message, number) {
    super(`${code}: ${message}`);
    this.name = "HeraldError";
    this.code = code;
    this.number = number ?? 0;
    this.detail = message;
  }

  /** Whether the same request may succeed later. */
  get retryable() {
    return RETRYABLE.has(this.code);
  }

  /** The error an Error frame body ({code, message}) stands for. */
  static fromBroker(body) {
    const name = ERROR_CODES[body.code] ?? `Unknown(${body.code})`;
    return new HeraldError(name, body.message, body.code);
  }
}

export const connectionLost = (why) => new HeraldError("ConnectionLost", why);
export const protocolError = (why) => new HeraldError("Protocol", why);
export const invalidArgument = (why) => new HeraldError("InvalidArgument", why);
