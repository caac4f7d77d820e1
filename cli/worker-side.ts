/**
 * The worker side (merge kernel, exports, ONNX Runtime sessions), loaded when a command needs
 * it: importing it loads the ONNX Runtime binding, which a coordinator process (`optimer run`,
 * `optimer study`) must not pay for or depend on.
 */
export function workerSide(): Promise<typeof import('../worker/index.js')> {
  return import('../worker/index.js');
}
