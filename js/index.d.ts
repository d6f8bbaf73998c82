// Type declarations of herald-client (docs/web.md has the guide).

/** Text (sent as UTF-8) or bytes. */
export type Data = string | Uint8Array | ArrayBuffer | ArrayBufferView;

export interface ConnectOptions {
  /** Stable identity across reconnects and page reloads; the broker assigns one if absent. */
  clientId?: string;
  /** Credentials, sent in Hello: a token, or a provider called at every
   * connect and reconnect and when the broker says the token is expiring
   * (its token is then sent in a Refresh: the connection and its
   * subscriptions carry on). With a fixed token the connection ends at the
   * token's expiry and the client stops (TokenExpired). */
  token?: string | (() => string | Promise<string>);
  /** A WebSocket class: needed on Node before 22 (e.g. the `ws` package's). */
  WebSocket?: unknown;
  /** Free text for the broker's logs. */
  clientName?: string;
  /** First reconnect delay (default 100 ms); doubles up to reconnectMaxMs, with jitter.
   * The same waits space out the hops between a cluster's nodes after
   * NotLeader answers (all but the first hop to a named leader). */
  reconnectInitialMs?: number;
  /** Longest reconnect delay (default 5000 ms). */
  reconnectMaxMs?: number;
  /** Give up after this many failed reconnects (default: never). */
  maxReconnectAttempts?: number;
  /** Publishes awaiting their confirm before publish() waits (default 10000). */
  maxPendingPublishes?: number;
  /** A connection must complete its handshake within this (default 10000 ms). */
  connectTimeoutMs?: number;
}

/** Where a subscription starts. */
export type Start = "resume" | "earliest" | "latest" | { offset: number } | { timestamp: number };

export interface SubscribeOptions {
  /** A durable consumer group: members share the messages and acks are kept. Absent: ephemeral. */
  group?: string;
  /** Default "resume": the group's committed position (latest for an ephemeral subscription). */
  start?: Start;
  /** Most messages unacknowledged (group) or unconsumed (ephemeral) at once (default 256). */
  prefetch?: number;
  /** Most bytes of delivered batches not yet released (default 1 MiB). */
  prefetchBytes?: number;
  /** Redelivery timeout; 0: the broker's default. */
  ackTimeoutMs?: number;
  /** Deliveries before dead-lettering; 0: the broker's default. */
  maxDeliveries?: number;
  /** Called, in its place among the messages, when retention deleted offsets
   * this group had not finished (the broker's Skipped); the subscription goes
   * on. Default: the client's "skipped" event. */
  onSkipped?: (s: SkippedInfo) => void;
}

export interface SkippedInfo {
  topic: string;
  group: string | null;
  /** First and last (inclusive) offsets that will never be delivered. */
  first: number;
  last: number;
}

export interface PublishOptions {
  key?: Data;
  headers?: Record<string, Data> | Array<[string, Data]>;
  /** Producer time, ms since the epoch (default now). */
  timestamp?: number;
}

export interface Receipt {
  /** The offset the record was stored at; `null` for a duplicate older than
   * the batches the broker remembers per producer (64): stored once, at an
   * offset it no longer knows. */
  offset: number | null;
  /** The broker had stored it already (a re-send after a reconnect). */
  duplicate: boolean;
}

export declare class HeraldError extends Error {
  /** A broker error code name ("UnknownTopic", "Busy", ...) or the client's own:
   * "ConnectionLost", "Timeout", "InvalidArgument", "Protocol", "Connect",
   * "Token" (the token provider failed). */
  readonly code: string;
  /** The broker's numeric code, 0 for the client's own errors. */
  readonly number: number;
  readonly detail: string;
  readonly retryable: boolean;
}

export declare const ERROR_CODES: Readonly<Record<number, string>>;

export declare class Message {
  readonly topic: string;
  readonly offset: number;
  readonly timestamp: number;
  readonly key: Uint8Array | null;
  readonly headers: Array<[string, Uint8Array]>;
  readonly payload: Uint8Array;
  /** 1 on the first delivery, higher on redeliveries. */
  readonly deliveryCount: number;
  text(): string;
  json<T = unknown>(): T;
  header(name: string): string | undefined;
  /** Done with it (queued; sent within 20 ms, or at once when half the prefetch window is pending). A no-op on ephemeral subscriptions. */
  ack(): void;
  /** Ack, and resolve once the broker wrote it durably. */
  ackConfirmed(): Promise<void>;
  /** Deliver it again after delayMs. */
  nack(delayMs?: number): void;
  /** Never deliver it again (counts as done). */
  terminate(): void;
}

export declare class Subscription implements AsyncIterableIterator<Message> {
  readonly topic: string;
  readonly group: string | null;
  /** Resolves once the broker accepted the first subscribe. */
  readonly ready: Promise<Subscription>;
  next(): Promise<IteratorResult<Message, undefined>>;
  return(): Promise<IteratorResult<Message, undefined>>;
  [Symbol.asyncIterator](): Subscription;
  /** Unsubscribes after the acks made so far are confirmed. */
  close(): Promise<void>;
}

export declare class RoomEvent {
  readonly name: string;
  readonly kind: "event" | "presence" | "reply";
  /** Who emitted it. */
  readonly sender: string;
  /** The room it came through, null for direct messages. */
  readonly room: string | null;
  /** Where it was read: "_room.<room>" (a room's log) or "_inbox.<client id>". */
  readonly topic: string;
  readonly payload: Uint8Array;
  /** Position in `topic`: grows with every event of that topic. */
  readonly offset: number;
  /** The id shared by the copies of an emit to several rooms (handed over once), else null. */
  readonly emitId: string | null;
  readonly timestamp: number;
  readonly deliveryCount: number;
  /** A request's correlation id (answered by `reply`), else 0. */
  readonly correlation: number;
  /** The client a request came from and a reply goes to, else null. */
  readonly replyTo: string | null;
  /** Whether it was a broadcast (emitted to the room but its sender). */
  readonly exceptSender: boolean;
  readonly expectsReply: boolean;
  text(): string;
  json<T = unknown>(): T;
  /** Answers a request(); resolves once durable in the requester's inbox. */
  reply(data: Data): Promise<void>;
}

export interface Presence {
  type: "join" | "leave" | "connect" | "disconnect";
  clientId: string;
  room: string | null;
}

export type Target =
  | string
  | { room: string; exceptSender?: boolean }
  | { rooms: string[]; exceptSender?: boolean }
  | { client: string }
  | { all: true };

export interface EmitReceipt {
  /** Clients reached, each once: the target rooms' members (less the sender
   * for a broadcast) and the inbox recipients. */
  recipients: number;
  /** Emit-to-all recipients left out because their inbox was full. */
  skipped: number;
}

export interface JoinOptions {
  /** A new member starts this many records (events and presence) before the
   * end of the room's log (default 0: at the end). Ignored for a member. */
  history?: number;
}

export interface TopicConfig {
  retentionBytes?: number;
  retentionMs?: number;
  segmentBytes?: number;
  fsync?: "always" | "never" | { intervalMs: number };
}

/** Settings of a new topic. */
export interface CreateTopicOptions extends TopicConfig {
  /** In a cluster, on how many nodes the topic is replicated (default: 3, or every node of a smaller cluster). */
  replicas?: number;
}

export interface GroupInfo {
  name: string;
  ackFloor: number;
  lag: number;
  inFlight: number;
  redelivered: number;
  deadLettered: number;
  members: string[];
  damaged: string | null;
}

export interface TopicInfo {
  name: string;
  config: { retentionBytes: number | null; retentionMs: number | null; segmentBytes: number | null; fsync: unknown };
  firstOffset: number;
  nextOffset: number;
  bytesOnDisk: number;
  segments: number;
  messagesPerSec: number;
  groups: GroupInfo[];
}

export interface ConnectionEventMap {
  connected: Event & { detail: object };
  /** `code` "NotLeader": a cluster node does not lead a publish's topic; the
   * client goes to the leader (docs/cluster.md). */
  disconnected: Event & { detail: { reason: string; code: string } };
  /** `url`: where this attempt goes (the next URL after a failed one; the
   * leader's after a NotLeader). */
  reconnecting: Event & { detail: { attempt: number; delayMs: number; url: string } };
  reconnected: Event & { detail: { attempt: number } };
  closed: Event & { detail: { reason: string } };
  /** A handler threw, a rejoin failed, the broker ended the connection
   * (e.g. TokenExpired), a reconnect was refused for good, a refresh failed. */
  error: Event & { detail: { error: unknown; context: string } };
  /** The broker will end the connection when its token expires. */
  tokenexpiring: Event & { detail: { expiresInMs: number } };
  /** The token provider's new token is in force (after a Refresh). */
  tokenrefreshed: Event & { detail: object };
  /** Retention deleted events of a room (or of a subscription without
   * onSkipped) before this client read them. */
  skipped: Event & { detail: { room?: string; topic: string; group?: string | null; first: number; last: number } };
}

export interface ClusterNode {
  id: number;
  /** The node's broker (TCP) address, as the node asked knows it. */
  addr: string;
}

export interface RaftGroupInfo {
  /** "meta" or "topic/<name>". */
  name: string;
  /** The leader's node id, if known. */
  leader: number | null;
  term: number;
  lastIndex: number | null;
  applied: number | null;
  /** How many entries each replica has; known on the leader only. */
  replicas: Array<{ node: number; matched: number | null }>;
}

export interface ClusterInfo {
  /** The id of the node asked. */
  nodeId: number;
  nodes: ClusterNode[];
  groups: RaftGroupInfo[];
}

export declare class Herald extends EventTarget {
  /** The URL in use (or tried next). */
  readonly url: string;
  /** The URLs given to connect. */
  readonly urls: string[];
  readonly clientId: string;
  readonly state: "connecting" | "connected" | "reconnecting" | "closed";
  readonly connected: boolean;

  addEventListener<K extends keyof ConnectionEventMap>(type: K, listener: (ev: ConnectionEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;

  publish(topic: string, data: Data, options?: PublishOptions): Promise<Receipt>;
  subscribe(topic: string, options?: SubscribeOptions): Subscription;

  createTopic(name: string, options?: CreateTopicOptions): Promise<TopicInfo>;
  deleteTopic(name: string): Promise<void>;
  listTopics(): Promise<TopicInfo[]>;
  describeTopic(name: string): Promise<TopicInfo>;
  listGroups(topic: string): Promise<GroupInfo[]>;
  resetGroup(topic: string, group: string, to: Exclude<Start, "resume">): Promise<void>;
  repairTopic(name: string, options?: { dryRun?: boolean }): Promise<unknown>;
  /** The cluster as the node this client is connected to sees it (topics it
   * may not see left out); InvalidArgument from a broker not in a cluster. */
  clusterStatus(): Promise<ClusterInfo>;

  /** Joins, then reads the room's log; resolves once it is being read. */
  join(room: string, options?: JoinOptions): Promise<void>;
  joinDurable(room: string, options?: JoinOptions): Promise<void>;
  /** Stops reading the room's log and leaves it (joining again starts at the end). */
  leave(room: string): Promise<void>;
  members(room: string): Promise<Array<{ clientId: string; online: boolean }>>;
  /** The rooms this client id is a member of (read again by a restarted client). */
  myRooms(): Promise<Array<{ room: string; durable: boolean }>>;
  emit(target: Target, event: string, data: Data): Promise<EmitReceipt>;
  broadcast(room: string, event: string, data: Data): Promise<EmitReceipt>;
  emitToClient(clientId: string, event: string, data: Data): Promise<EmitReceipt>;
  emitToRooms(rooms: string[], event: string, data: Data): Promise<EmitReceipt>;
  emitAll(event: string, data: Data): Promise<EmitReceipt>;
  request(clientId: string, event: string, data: Data, options?: { timeoutMs?: number }): Promise<RoomEvent>;
  /** The handler runs for every event of that name, one at a time, in the order of the room's
   * log (or the inbox) it came from; the event is acked there when the handler returns. */
  on(event: string, handler: (ev: RoomEvent) => void | Promise<void>): () => void;
  off(event: string, handler: (ev: RoomEvent) => void | Promise<void>): void;
  onPresence(handler: (p: Presence) => void | Promise<void>): () => void;

  /** Waits up to timeoutMs for unconfirmed publishes and acks, then closes. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/**
 * Connects; resolves once a broker accepted the handshake. `urls`: one
 * broker's WebSocket URL (`ws://HOST:PORT/ws`), or the URLs of a cluster's
 * nodes (any order; they are tried in turn, and a publish answered
 * NotLeader moves the connection to the topic's leader among them).
 */
export declare function connect(urls: string | string[], options?: ConnectOptions): Promise<Herald>;
export declare const CLIENT_NAME: string;
