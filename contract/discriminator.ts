// Type-checked (tsc --noEmit) against the types openapi-typescript generates from the served
// document, beside build/examples.ts (every request example of the document): both written by
// tests/test_openapi_tools.py. `command_type` narrows a payload to its command type's own fields,
// and an envelope with a command_type that names no command type does not compile.
import type { components } from "./build/bridge";
import { close_positions } from "./build/examples";

type Schemas = components["schemas"];

export function describe(payload: Schemas["CommandPayloadRequest"]): string {
  switch (payload.command_type) {
    case "open_position":
      return `${payload.direction} ${payload.volume} ${payload.symbol}`;
    case "close_position":
    case "modify_position":
      return `ticket ${payload.ticket}`;
    case "close_positions":
      return `close ${payload.target.mode}`;
    case "cancel_orders":
      return `cancel ${(payload.tickets ?? ["all"]).join(", ")}`;
    case "disable_trading":
    case "enable_trading":
    case "sync_account":
      return payload.command_type;
    default: {
      const unhandled: never = payload; // every command type is a case above
      return unhandled;
    }
  }
}

export const wrongCommandType: Schemas["CommandEnvelopeDocRequest"] = {
  ...close_positions,
  payload: {
    command_id: "cmd-10001",
    // @ts-expect-error: not a command type (with "close_positions" here this compiles)
    command_type: "ClosePositionsPayloadRequest",
    priority: "critical",
    fast_lane: true,
    reason: "daily_drawdown_breach",
    target: { mode: "all_positions" },
  },
};

// @ts-expect-error: close_positions without its target
export const closeWithoutTarget: Schemas["ClosePositionsPayloadRequest"] = {
  command_id: "cmd-1",
  command_type: "close_positions",
  priority: "critical",
  fast_lane: true,
  reason: "",
};
