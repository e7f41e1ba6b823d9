// SPDX-License-Identifier: GPL-3.0-or-later
// `seethrough batch` as a Flamenco 3 custom job type: one task per shard (`--shard K/N`), each on a
// worker with a GPU that starts its own server (--serve-model), then one task for the contact sheets.
// Put this file in the `scripts` folder next to the Flamenco Manager and restart it (docs/farm.md).

const JOB_TYPE = {
  label: "SeeThrough Batch",
  description: "Generate every camera, frame and seed of SeeThrough layouts, cut into shards",
  settings: [
    { key: "inputs", type: "string", subtype: "file_path", required: true,
      description: ".blend or layout .json files, a folder or a glob (on the shared storage)" },
    { key: "out_dir", type: "string", subtype: "dir_path", required: true,
      description: "Output folder on the shared storage" },
    { key: "shards", type: "int32", default: 8, required: true,
      description: "How many tasks the batch is cut into (about one per GPU worker)" },
    { key: "frames", type: "string", default: "",
      description: "Frames of the .blend files, e.g. 1-24 (empty: each file's current frame)" },
    { key: "seeds", type: "string", default: "42", description: "Comma-separated seeds" },
    { key: "consistent", type: "bool", default: false,
      description: "Each frame an edit of the frame before it (a camera's frames stay in one task)" },
    { key: "model", type: "string", default: "black-forest-labs/FLUX.1-dev",
      description: "FLUX.1-dev: a folder, or a Hugging Face id in the workers' cache" },
    { key: "lora", type: "string", subtype: "file_path", required: true,
      description: "The SeeThrough3D LoRA (.safetensors) as the workers see it" },
    { key: "extra_args", type: "string", default: "",
      description: "More seethrough batch options, e.g. --steps 20 --cameras all" },
    { key: "seethrough", type: "string", default: "seethrough",
      description: "The seethrough command on the workers" },
  ],
};

function batchArgs(settings) {
  const args = ["batch", settings.inputs, "--out", settings.out_dir, "--seeds", settings.seeds];
  if (settings.frames) args.push("--frames", settings.frames);
  if (settings.consistent) args.push("--consistent");
  return args.concat(settings.extra_args.split(" ").filter((arg) => arg.length > 0));
}

function compileJob(job) {
  const settings = job.settings;
  const shards = [];
  for (let k = 1; k <= settings.shards; k++) {
    const task = author.Task(`shard-${k}-of-${settings.shards}`, "misc");
    const args = batchArgs(settings).concat([
      "--shard", `${k}/${settings.shards}`, "--serve-model", settings.model, "--serve-lora", settings.lora,
    ]);
    task.addCommand(author.Command("exec", { exe: settings.seethrough, args: args }));
    job.addTask(task);
    shards.push(task);
  }
  // Everything is complete once the shards are done: this run skips it all and writes the sheets.
  const sheets = author.Task("contact-sheets", "misc");
  sheets.addCommand(author.Command("exec", { exe: settings.seethrough, args: batchArgs(settings) }));
  for (const task of shards) sheets.addDependency(task);
  job.addTask(sheets);
}
