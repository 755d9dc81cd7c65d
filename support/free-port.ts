// The implementation lives in the testing kit (src/testing/free-port.ts).
export { freePort } from '../src/testing/free-port';
