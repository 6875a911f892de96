// The syntax tree of a parsed Jinja template. Each node records the template line it starts on, for
// error messages. Expressions and statements are tagged structs; what each field means per kind is
// written next to the kind.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace dsv2::jinja {

struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;
using KeywordArguments = std::vector<std::pair<std::string, ExprPtr>>;

enum class ExprKind {
  Literal,      // `value`
  ListLiteral,  // operands: the items
  TupleLiteral, // operands: the items of `a, b` or `(a, b)`
  DictLiteral,  // operands: key0, value0, key1, value1, ...
  Name,         // `name`
  Attribute,    // operands[0].name
  Subscript,    // operands[0][operands[1]]
  Slice,        // operands[0][operands[1] : operands[2] : operands[3]]; absent parts are null
  Call,         // operands[0](operands[1..], keywords)
  Filter,       // operands[0] | name(operands[1..], keywords); operands[0] is null in filter/set blocks
  Test,         // operands[0] is [not] name(operands[1..], keywords)
  Not,          // not operands[0]
  Negate,       // -operands[0]
  Plus,         // +operands[0]
  Binary,       // operands[0] binary_op operands[1]
  Compare,      // operands[0] compare_ops[0] operands[1] compare_ops[1] operands[2] ... (chained)
  Conditional,  // operands[1] if operands[0] else operands[2]; operands[2] is null without `else`
};

enum class BinaryOp { Add, Subtract, Multiply, Divide, FloorDivide, Modulo, Power, Concat, And, Or };
enum class CompareOp { Equal, NotEqual, Less, LessEqual, Greater, GreaterEqual, In, NotIn };

struct Expr {
  ExprKind kind;
  int line;
  Value value;
  std::string name;
  BinaryOp binary_op = BinaryOp::Add;
  std::vector<CompareOp> compare_ops;
  std::vector<ExprPtr> operands;
  KeywordArguments keywords;
  bool negated = false;  // Test: `is not`
};

struct Parameter {
  std::string name;
  ExprPtr default_value;  // null when required
};

enum class StmtKind {
  Text,         // `text`, output as is
  Output,       // {{ expr }}
  If,           // branches: (condition, body) for if and each elif; else_body
  For,          // for targets in expr [if condition]: body [else: else_body]
  Set,          // set targets[0] = expr, or targets[0].attribute = expr, or t0, t1 = expr (unpacking)
  SetBlock,     // set targets[0] [| filters in expr] %} body {% endset
  Macro,        // macro name(parameters): body
  CallBlock,    // call[(parameters)] expr: body, which the called macro runs as caller()
  FilterBlock,  // filter expr (a filter chain on null input): body
  With,         // with assignments: body
  Break,
  Continue,
  Generation,   // transformers' {% generation %}: body, rendered as is
};

struct Stmt {
  StmtKind kind;
  int line;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::vector<std::string> targets;
  std::string attribute;
  std::string name;
  std::vector<Parameter> parameters;
  KeywordArguments assignments;
};

}  // namespace dsv2::jinja
