import { replayConformance } from './conformance.js';

replayConformance('conformance with the reference HTTPSQS 1.7 (journal)', ['--engine', 'journal']);
replayConformance('conformance with the reference HTTPSQS 1.7 (LMDB)', ['--engine', 'lmdb']);
