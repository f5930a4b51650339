// The server's error answers ({error: {code, message}}) as plain sentences for people.
"use strict";

const Messages = (() => {
  const megabytes = (n) => `${(n / 2 ** 20).toFixed(n < 2 ** 20 ? 2 : 0)} MB`;
  const megapixels = (n) => `${(n / 1e6).toFixed(n < 1e6 ? 2 : 0)} megapixels`;
  const DAMAGED = "This file is damaged (cut short or corrupt), so it cannot be searched; try another copy of it.";

  const BY_CODE = {
    too_large: (e, s) => `The image is too large: the server takes files up to ${megabytes(s.max_upload_bytes)}.`,
    too_many_pixels: (e, s) => `The image has too many pixels: the server takes up to ${megapixels(s.max_pixels)}.`,
    not_an_image: () => "That file is not an image this server can read (JPEG, PNG, WebP, GIF, BMP, TIFF).",
    empty_image: () => "That file is empty.",
    truncated_image: () => DAMAGED,
    corrupt_image: () => DAMAGED,
    bad_image: () => DAMAGED,
    unknown_model: () => "That model is not served any more; reload the page.",
    not_found: () => "That document or image is not in the index any more.",
    timeout: () => "The upload took too long to arrive; try again, or with a smaller image.",
    rate_limited: (e, s, r) => `Too many searches; try again in ${retryAfter(r)} seconds.`,
    unavailable: () => "The search backend (the cluster) is down or unreachable; try again later.",
    busy: () => "The server is busy with other large images; try again in a moment.",
    internal: () => "The server hit an unexpected error; try again, and tell its operator if it persists.",
    invalid_request: invalidRequest,
    bad_request: (e) => `The search was refused: ${e.message}.`.replace(/\.\.$/, "."),
  };

  function retryAfter(response) {
    return (response && response.headers.get("Retry-After")) || "a few";
  }

  // a field the form sends out of range: say what the server takes
  function invalidRequest(error, settings) {
    const m = error.message || "";
    if (/^k: .*less than or equal/.test(m)) return `The server gives at most ${settings.max_k} results; ask for fewer.`;
    if (/^k: /.test(m)) return "Ask for at least 1 result.";
    if (/^expand: /.test(m)) return `Query expansion takes at most ${settings.max_expand} results.`;
    return `The search was refused: ${m}.`;
  }

  // a sentence for a failed search: the error's code first, else its HTTP status
  function forError(status, error, settings, response) {
    const make = BY_CODE[error.code] || (status === 429 ? BY_CODE.rate_limited : null);
    if (make) return make(error, settings || {}, response);
    if (status >= 500) return BY_CODE.internal();
    return `The search failed: ${error.message || `HTTP ${status}`}.`;
  }

  return { forError, megabytes, DAMAGED };
})();

window.Messages = Messages;
