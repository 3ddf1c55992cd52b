/**
 * Record-set decompression for Produce. Kafka codecs: 1 gzip, 2 snappy,
 * 3 lz4, 4 zstd. Output is bounded so that a small compressed batch cannot
 * expand past the largest batch the broker accepts.
 */

import { gunzip } from "node:zlib";
import { BatchError, ErrorCode } from "./errors.js";

export const CODEC_NAMES = ["none", "gzip", "snappy", "lz4", "zstd"] as const;

export function decompress(codec: number, input: Buffer, maxBytes: number): Promise<Buffer> {
  switch (codec) {
    case 1:
      return new Promise((resolve, reject) =>
        gunzip(input, { maxOutputLength: maxBytes }, (err, out) =>
          err ? reject(new BatchError((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" ? ErrorCode.MESSAGE_TOO_LARGE : ErrorCode.CORRUPT_MESSAGE, `gzip: ${err.message}`)) : resolve(out),
        ),
      );
    default:
      return Promise.reject(new BatchError(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE, `compression codec ${CODEC_NAMES[codec] ?? codec} is not supported`));
  }
}
