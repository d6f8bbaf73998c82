// herald-client: the JavaScript client of Herald, an ES module with no
// dependencies, for browsers and Node (20+: pass { WebSocket } from the
// ws package before Node 22). docs/web.md documents the API.

export { connect, Herald, CLIENT_NAME } from "./client.js";
export { Subscription, Message } from "./subscription.js";
export { RoomEvent } from "./rooms.js";
export { HeraldError, ERROR_CODES } from "./errors.js";
