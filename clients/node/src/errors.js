// Typed errors: one class per gRPC status code the vault answers with. Each carries `code`
// (the numeric gRPC code), `codeName` (`NOT_FOUND`, ...), the server's `message`, and
// `leader` (the leader's address a follower named in `x-vault-leader`, if any).
import { Code, ConnectError } from "@connectrpc/connect";

export const LEADER_HEADER = "x-vault-leader";

const NAMES = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export class VaultError extends Error {
  constructor(message, code = Code.Unknown, leader = undefined) {
    super(`${(NAMES[code] ?? "UNKNOWN").toLowerCase()}: ${message}`);
    this.name = new.target.name;
    this.code = code;
    this.codeName = NAMES[code] ?? "UNKNOWN";
    this.rawMessage = message;
    this.leader = leader;
  }
}

export class InvalidArgumentError extends VaultError {}
export class NotFoundError extends VaultError {}
export class AlreadyExistsError extends VaultError {}
/** The token's role, the address allowlist or the reader rules refuse the call. */
export class PermissionDeniedError extends VaultError {}
export class UnauthenticatedError extends VaultError {}
export class FailedPreconditionError extends VaultError {}
/** A check-and-set write found another current version. */
export class CasMismatchError extends FailedPreconditionError {}
export class AbortedError extends VaultError {}
export class ResourceExhaustedError extends VaultError {}
/** A watch asked to resume from a revision the node no longer keeps (OUT_OF_RANGE): read the
 * secrets again, then watch from `revision` (the last one received). */
export class CompactedError extends VaultError {
  revision = 0;
}
export class UnimplementedError extends VaultError {}
/** No node could answer (down, no leader, unreachable) within the client's retry time. */
export class UnavailableError extends VaultError {}
export class DeadlineExceededError extends VaultError {}
export class InternalError extends VaultError {}

const BY_CODE = {
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.NotFound]: NotFoundError,
  [Code.AlreadyExists]: AlreadyExistsError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.Unauthenticated]: UnauthenticatedError,
  [Code.FailedPrecondition]: FailedPreconditionError,
  [Code.Aborted]: AbortedError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.OutOfRange]: CompactedError,
  [Code.Unimplemented]: UnimplementedError,
  [Code.Unavailable]: UnavailableError,
  [Code.DeadlineExceeded]: DeadlineExceededError,
  [Code.Internal]: InternalError,
};

/** The typed error for `code` and `message` (as a batch item's error carries them). */
export function errorFor(code, message, leader = undefined) {
  let Cls = BY_CODE[code] ?? VaultError;
  if (Cls === FailedPreconditionError && message.startsWith("check-and-set failed")) {
    Cls = CasMismatchError;
  }
  return new Cls(message, code, leader);
}

/** The typed error for anything a call threw. */
export function fromError(e) {
  if (e instanceof VaultError) return e;
  const ce = ConnectError.from(e);
  const leader = ce.metadata?.get(LEADER_HEADER) || undefined;
  return errorFor(ce.code, ce.rawMessage || NAMES[ce.code]?.toLowerCase() || "error", leader);
}
