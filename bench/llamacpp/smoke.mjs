// Loads a GGUF through node-llama-cpp's public JS API (prebuilt binaries only,
// no build, no download), generates a few tokens greedily from a short id
// prompt and prints the llama.cpp release the binaries report.
// usage: node smoke.mjs MODEL.gguf [threads]   (run from a dir whose
// node_modules holds node-llama-cpp, or with NODE_PATH unsupported for ESM:
// run.sh copies it next to the install)
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, threadsArg] = process.argv.slice(2);
if (!modelPath) {
    console.error("usage: node smoke.mjs MODEL.gguf [threads]");
    process.exit(2);
}
const llama = await getLlama({gpu: false, build: "never", usePrebuiltBinaries: true,
                              logLevel: LlamaLogLevel.error});
const model = await llama.loadModel({modelPath});
const ctx = await model.createContext({contextSize: 256, threads: Number(threadsArg || 2)});
const seq = ctx.getSequence();
const prompt = Array.from({length: 16}, (_, i) => 259 + i * 13);
const out = [];
for await (const tok of seq.evaluate(prompt, {temperature: 0})) {
    out.push(tok);
    if (out.length >= 8) break;
}
console.log(JSON.stringify({
    ok: out.length === 8,
    llamaCpp: llama.llamaCppRelease,
    buildType: llama.buildType,
    model: modelPath,
    params: model.fileInsights?.totalParameters ?? null,
    trainContextSize: model.trainContextSize,
    generated: out,
}));
await ctx.dispose();
await model.dispose();
await llama.dispose();
