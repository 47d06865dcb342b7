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
