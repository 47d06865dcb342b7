/**
 * Options for @libp2p/utils' lpStream / pbStream reading messages of at most `maxDataLength`
 * bytes from an untrusted peer.
 *
 * lpStream (@libp2p/utils 7.4) decodes the unsigned-varint length prefix one byte at a time
 * and enforces its maxLengthLength only once a varint is complete: a prefix of continuation
 * bytes only (0x80 0x80 …) never completes, so it is read byte after byte, each appended to a
 * growing buffer, until the read's deadline. This decoder refuses a prefix as soon as it is
 * longer than the longest one `maxDataLength` allows (InvalidDataLengthLengthError, the error
 * lpStream itself throws for an over-long complete prefix).
 */
import { InvalidDataLengthLengthError } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { varintLength } from './varint.js'

export interface LengthPrefixOptions {
  maxDataLength: number
  lengthDecoder: (data: Uint8ArrayList) => number
}

export function lengthPrefixOptions (maxDataLength: number): LengthPrefixOptions {
  const maxLengthLength = varintLength(maxDataLength)
  return {
    maxDataLength,
    lengthDecoder: (data: Uint8ArrayList): number => {
      let value = 0
      for (let i = 0; i < data.byteLength && i < maxLengthLength; i++) {
        const b = data.get(i)
        value += (b & 0x7f) * 2 ** (7 * i)
        if (b < 0x80) return value
      }
      if (data.byteLength >= maxLengthLength) throw new InvalidDataLengthLengthError(`length prefix longer than ${maxLengthLength} bytes (messages are at most ${maxDataLength} bytes)`)
      // incomplete: lpStream reads one more byte
      throw new RangeError('incomplete varint')
    }
  }
}
