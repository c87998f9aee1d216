/** Bosun's version; its own module so `bosun --version` loads nothing else. */
export const BOSUN_VERSION = "0.1.0";
