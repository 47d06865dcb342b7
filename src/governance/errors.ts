/** Named governance errors (tests check `.name`). */
export class GovernanceConfigError extends Error {
  static override name = 'GovernanceConfigError'
  override name = 'GovernanceConfigError'
}
export class GovernanceKeyError extends Error {
  static override name = 'GovernanceKeyError'
  override name = 'GovernanceKeyError'
}
export class EnvelopeError extends Error {
  static override name = 'EnvelopeError'
  override name = 'EnvelopeError'
}
/** the built-in development governance on a non-loopback address (anyone could halt or take over that mesh) */
export class DevGovernanceError extends Error {
  static override name = 'DevGovernanceError'
  override name = 'DevGovernanceError'
}
